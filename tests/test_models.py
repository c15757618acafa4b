import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl.config import ModelConfig
from jaxdfl.data import pretrain_split
from jaxdfl.models import load_weights, save_weights, tiny_vit
from jaxdfl.sim.build import load_model
from jaxdfl.models.tiny_vit import TinyViTSpec

SPEC = TinyViTSpec(dim=16, depth=2, heads=2, mlp_dim=32)


def test_hook_sees_every_linear_map_once_with_its_input_width():
    params = tiny_vit.init_params(jax.random.key(0), SPEC)
    seen = {}

    def hook(name, x):
        seen[name] = seen.get(name, 0) + 1
        assert x.shape[-1] == tiny_vit.linear_shapes(SPEC)[name][0]

    tiny_vit.apply(params, jnp.zeros((3, 8, 8)), SPEC, hook=hook)
    assert seen == {name: 1 for name in tiny_vit.linear_shapes(SPEC)}


def test_hook_output_is_added_to_the_linear_map():
    params = tiny_vit.init_params(jax.random.key(0), SPEC)
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8))
    plain = tiny_vit.apply(params, x, SPEC)
    shifted = tiny_vit.apply(params, x, SPEC, hook=lambda n, h: jnp.ones(10) * 2.5 if n == "head" else None)
    np.testing.assert_allclose(shifted, plain + 2.5, rtol=1e-6, atol=1e-6)


def test_bundled_backbone_recognises_held_out_digits():
    model, params = load_model(ModelConfig())
    _, _, x_val, y_val = pretrain_split()
    accuracy = float((model.apply(params, jnp.asarray(x_val)).argmax(-1) == y_val).mean())
    assert accuracy > 0.9  # the shipped weights reached 0.972 (see experiments/pretrain_tiny_vit.py)


def test_weights_round_trip(tmp_path):
    params = tiny_vit.init_params(jax.random.key(2), SPEC)
    save_weights(tmp_path / "w.safetensors", params, SPEC, {"note": "test"})
    model, loaded = load_weights(tmp_path / "w.safetensors")
    assert model.spec == SPEC
    jax.tree.map(np.testing.assert_array_equal, params, loaded)


def test_causal_block_ignores_later_tokens():
    from jaxdfl.models import blocks

    params = tiny_vit.init_params(jax.random.key(0), SPEC)
    x = jax.random.normal(jax.random.key(1), (2, 6, SPEC.dim))
    changed = x.at[:, 4:].add(jax.random.normal(jax.random.key(2), (2, 2, SPEC.dim)))  # LayerNorm would undo a constant
    run = lambda inp, causal: blocks.encoder_block(params, "block0", inp, SPEC.heads, None, causal)  # noqa: E731
    np.testing.assert_allclose(run(x, True)[:, :4], run(changed, True)[:, :4], rtol=1e-5, atol=1e-5)
    assert not np.allclose(run(x, False)[:, :4], run(changed, False)[:, :4])
