"""jaxdfl.models.vit against Hugging Face's ViTForImageClassification (torch), on a tiny random model."""

import json

import pytest

torch = pytest.importorskip("torch", reason="the ViT parity test compares against transformers' torch ViT")
transformers = pytest.importorskip("transformers", reason="the ViT parity test needs transformers' ViT")

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file

from jaxdfl.errors import ModelError
from jaxdfl.models import vit

TINY = {"image_size": 16, "patch_size": 4, "num_channels": 3, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64, "num_labels": 5}


def _hf_checkpoint(path, seed=0, **overrides):
    """A tiny HF ViT with every weight randomised (biases and LayerNorms too, so their mapping is tested),
    saved with save_pretrained; returns the torch model, our spec, our params and the HF tensors read back."""
    torch.manual_seed(seed)
    model = transformers.ViTForImageClassification(transformers.ViTConfig(**(TINY | overrides))).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1.0 + 0.1 * torch.randn_like(p) if "layernorm" in name and name.endswith("weight")
                    else 0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    spec = vit.ViTSpec.from_hf_config(json.loads((path / "config.json").read_text()))
    tensors = load_file(str(path / "model.safetensors"))
    return model, spec, vit.params_from_hf(tensors, spec), tensors


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _hf_checkpoint(tmp_path_factory.mktemp("vit"))


def _pixels(spec, batch=3, seed=1):
    shape = (batch, spec.num_channels, spec.image_size, spec.image_size)
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _torch_logits(model, pixels):
    with torch.no_grad():
        return model(pixel_values=torch.from_numpy(pixels)).logits.numpy()


def test_spec_from_config(tiny):
    _, spec, _, _ = tiny
    assert spec == vit.ViTSpec(**TINY, layer_norm_eps=1e-12, qkv_bias=True)


def test_logits_match_torch(tiny):
    model, spec, params, _ = tiny
    pixels = _pixels(spec)
    ours = np.asarray(vit.apply(params, jnp.asarray(pixels), spec))
    ref = _torch_logits(model, pixels)
    assert ours.shape == ref.shape == (3, TINY["num_labels"])
    assert np.abs(ours - ref).max() <= 1e-4, np.abs(ours - ref).max()
    jitted = np.asarray(jax.jit(partial(vit.apply, spec=spec))(params, jnp.asarray(pixels)))
    assert np.abs(jitted - ref).max() <= 1e-4


def test_no_qkv_bias_and_module_state_dict(tmp_path):
    # qkv_bias=False drops the q/k/v biases; transformers>=5's in-memory names convert as well.
    model, spec, params, _ = _hf_checkpoint(tmp_path, seed=2, qkv_bias=False, num_hidden_layers=1)
    assert not spec.qkv_bias and "b" not in params["block0_q"] and "b" in params["block0_o"]
    pixels = _pixels(spec, batch=2)
    ref = _torch_logits(model, pixels)
    assert np.abs(np.asarray(vit.apply(params, jnp.asarray(pixels), spec)) - ref).max() <= 1e-4
    from_module = vit.params_from_hf({k: v.numpy() for k, v in model.state_dict().items()}, spec)
    assert np.abs(np.asarray(vit.apply(from_module, jnp.asarray(pixels), spec)) - ref).max() <= 1e-4


def test_hook(tiny):
    _, spec, params, _ = tiny
    pixels = jnp.asarray(_pixels(spec, batch=2))
    base = vit.apply(params, pixels, spec)
    seen = {}

    def record(name, x):
        seen[name] = x.shape[-1]  # and returns None: no change

    np.testing.assert_array_equal(vit.apply(params, pixels, spec, hook=record), base)
    assert seen == {name: din for name, (din, _) in vit.linear_shapes(spec).items()}

    def delta_q(name, x):
        return 0.5 * jnp.ones(x.shape[:-1] + (spec.hidden_size,)) if name == "block0_q" else None

    assert np.abs(np.asarray(vit.apply(params, pixels, spec, hook=delta_q) - base)).max() > 1e-3


def test_names_and_kinds(tiny):
    _, spec, params, _ = tiny
    shapes = vit.linear_shapes(spec)
    assert set(shapes) == {"embed", "head"} | {f"block{i}_{k}" for i in range(2) for k in
                                                ("q", "k", "v", "o", "up", "down")}
    for name, (din, dout) in shapes.items():
        assert params[name]["w"].shape == (din, dout) and params[name]["b"].shape == (dout,)
    assert shapes["embed"] == (3 * 4 * 4, 32)
    assert [vit.layer_kind(n) for n in ("block3_q", "block1_down", "head", "embed")] == ["q", "down", "head", "embed"]


def test_bad_inputs_raise(tiny):
    _, spec, params, _ = tiny
    with pytest.raises(ModelError, match="expected pixels"):
        vit.apply(params, jnp.zeros((1, 3, 32, 32)), spec)
    with pytest.raises(ModelError, match="expected pixels"):
        vit.apply(params, jnp.zeros((1, 1, 16, 16)), spec)
    cfg = transformers.ViTConfig(**TINY).to_dict()
    with pytest.raises(ModelError, match="hidden_act"):
        vit.ViTSpec.from_hf_config(cfg | {"hidden_act": "relu"})
    with pytest.raises(ModelError, match="model_type"):
        vit.ViTSpec.from_hf_config(cfg | {"model_type": "bert"})
    tensors = dict(tiny[3])
    tensors.pop("vit.encoder.layer.1.intermediate.dense.bias")
    with pytest.raises(ModelError, match=r"missing tensor vit\.encoder\.layer\.1\.intermediate\.dense\.bias"):
        vit.params_from_hf(tensors, spec)
    with pytest.raises(ModelError, match="position_embeddings has shape"):
        vit.params_from_hf(tiny[3], vit.ViTSpec(**TINY | {"image_size": 32}))
