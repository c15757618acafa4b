"""experiments/smollm2_shape.py: the random stand-in for SmolLM2 on offline GPU machines must be a Llama
directory with exactly the tensors (names and shapes) transformers writes for the same config, and load."""

import json
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from jaxdfl.models import from_pretrained

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import smollm2_shape  # noqa: E402

transformers = pytest.importorskip("transformers")
pytest.importorskip("torch")  # transformers builds the reference model in torch (a test dependency)


def shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path / "model.safetensors"), framework="np") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}


@pytest.mark.parametrize("tied", [True, False])
def test_random_weights_have_the_tensors_transformers_writes_and_load(tied, tmp_path):
    config = {"model_type": "llama", "vocab_size": 96, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 48,
              "rms_norm_eps": 1e-5, "rope_theta": 1000.0, "tie_word_embeddings": tied, "hidden_act": "silu"}
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    (ours / "config.json").write_text(json.dumps(config))
    smollm2_shape.write_weights(ours)
    hf_config = transformers.LlamaConfig(**{k: v for k, v in config.items() if k != "model_type"})
    transformers.AutoModelForCausalLM.from_config(hf_config).save_pretrained(theirs)
    assert shapes(ours) == shapes(theirs)
    model, params = from_pretrained(ours, log=lambda _: None)
    assert (model.spec.num_layers, model.spec.num_kv_heads, model.spec.tie_embeddings) == (2, 2, tied)
    assert params["block1_down"]["w"].shape == (48, 32) and ("head" in params) == (not tied)
