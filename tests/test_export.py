"""Exporting adapters in PEFT's format: a tiny random Llama with a jaxdfl adapter gives the same logits in
jaxdfl and as ``peft.PeftModel`` over transformers' PyTorch model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import jaxdfl
from jaxdfl.adapters.hetero import HeteroLoraConfig
from jaxdfl.adapters.lora import lora
from jaxdfl.core import adapter_hook
from jaxdfl.errors import ConfigError
from jaxdfl.export import export_run, layer_updates, low_rank, write_peft
from jaxdfl.models import adapted_layers, from_pretrained

torch = pytest.importorskip("torch", reason="the export is checked against PEFT on PyTorch (test extra)")
peft = pytest.importorskip("peft", reason="the export is checked against PEFT (test extra)")
from test_decoder_parity import TOKENS, max_diff, tiny_hf_model, torch_logits  # noqa: E402


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    model = tiny_hf_model("llama")
    path = tmp_path_factory.mktemp("llama")
    model.save_pretrained(path)
    ours, params = from_pretrained(path, log=lambda _: None)
    return model, ours, params


def _randomised(state, key):
    """Every leaf of an adapter drawn anew (B is zero at init: the export would be trivially empty)."""
    leaves, treedef = jax.tree.flatten(state.params)
    keys = jax.random.split(key, len(leaves))
    return state._replace(params=treedef.unflatten([0.3 * jax.random.normal(k, x.shape) for k, x in
                                                    zip(keys, leaves)]))


@pytest.mark.parametrize("method_name", ["lora", "flora"])
def test_peft_gives_jaxdfls_logits(tiny_llama, tmp_path, method_name):
    model, ours, params = tiny_llama
    layers = adapted_layers(ours, ["q", "v", "o", "up", "down"])
    if method_name == "lora":
        method = lora(rank=3, alpha=6.0)
        state = _randomised(method.init(jax.random.key(0), layers), jax.random.key(1))
    else:  # a device whose folded-in update has rank above its own LoRA's
        method = HeteroLoraConfig(name="flora", rank=4, alpha=4.0, ranks=(2, 4)).make(8)
        state = _randomised(method.init(jax.random.key(0), layers, jnp.int32(2)), jax.random.key(1))
        memory = {n: 0.05 * jax.random.normal(jax.random.fold_in(jax.random.key(2), i), m.shape)
                  for i, (n, m) in enumerate(state.memory.items())}
        state = state._replace(memory=memory)
    want = ours.apply(params, jnp.asarray(TOKENS), hook=adapter_hook(method, state))
    assert max_diff(want, torch_logits(model, TOKENS)) > 1e-2  # the adapter really changes the model
    out = write_peft(layer_updates(lambda n, x: method.delta(state, n, x), layers), ours.spec, tmp_path / "peft")
    adapted = peft.PeftModel.from_pretrained(model, str(out)).eval()
    assert max_diff(torch_logits(adapted, TOKENS), want) <= 1e-4


def test_low_rank_factors_are_exact_at_the_numerical_rank():
    rng = np.random.default_rng(0)
    update = rng.normal(size=(7, 3)) @ rng.normal(size=(3, 9))
    a, b = low_rank(update)
    assert a.shape == (3, 9) and b.shape == (7, 3)
    np.testing.assert_allclose(b @ a, update, atol=1e-10)


def test_runs_of_the_bundled_digits_model_cannot_be_exported(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(jaxdfl.load_config(None).to_dict()))
    with pytest.raises(ConfigError, match="no Hugging Face counterpart"):
        export_run(tmp_path)
    with pytest.raises(ConfigError, match="not a run folder"):
        export_run(tmp_path / "nothing")
