import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.adapters import full, lora, num_params
from jaxdfl.core import RoundControl

LAYERS = {"a": (6, 5), "b": (5, 3)}


@pytest.mark.parametrize("jit", [False, True])
def test_lora_delta_is_the_dense_low_rank_product(jit):
    method = lora(rank=2, alpha=6.0)
    state = method.init(jax.random.key(0), LAYERS)
    # give B non-zero values so the product is not trivially zero
    state = state._replace(params=jax.tree.map(lambda p: p + 0.1 * jnp.arange(p.size).reshape(p.shape), state.params))
    x = jax.random.normal(jax.random.key(1), (4, 7, 6))
    delta = jax.jit(method.delta, static_argnums=1) if jit else method.delta
    a, b = state.params["a"]["a"], state.params["a"]["b"]
    expected = x @ (3.0 * b @ a).T  # W = (alpha/r) B A maps 6 -> 5
    np.testing.assert_allclose(delta(state, "a", x), expected, rtol=1e-5, atol=1e-5)
    assert method.delta(state, "not_adapted", x) is None


def test_lora_starts_as_the_identity_and_counts_r_times_in_plus_out():
    method = lora(rank=3)
    state = method.init(jax.random.key(0), LAYERS)
    assert float(jnp.abs(method.delta(state, "b", jnp.ones((2, 5)))).max()) == 0.0
    assert num_params(state.params) == 3 * (6 + 5) + 3 * (5 + 3)
    a = state.params["a"]["a"]
    assert abs(float(a.std()) - 6 ** -0.5) < 0.25  # N(0, 1/k) by default (docs/methods.md, "Initialisation")


def test_full_finetuning_adds_x_times_dw():
    method = full()
    state = method.init(jax.random.key(0), LAYERS)
    assert num_params(state.params) == 6 * 5 + 5 * 3
    dw = jax.random.normal(jax.random.key(3), (6, 5))
    state = state._replace(params={**state.params, "a": dw})
    x = jnp.ones((2, 6))
    np.testing.assert_allclose(method.delta(state, "a", x), x @ dw, rtol=1e-6)


def test_dense_message_counts_every_parameter():
    method = lora(rank=2)
    state = method.init(jax.random.key(0), LAYERS)
    message, _ = method.encode(state, state.params, jax.random.key(1), RoundControl())
    assert message.mask is None
    assert float(message.count) == num_params(state.params)
    assert float(message.bits) == 32 * num_params(state.params)


def test_lora_fa_trains_and_sends_b_only_and_averaging_it_is_exact():
    """The worked example of docs/methods.md: a method added by one file and one registry line runs from a
    config; averaging B over devices sharing A averages their adapted maps exactly."""
    from jaxdfl.config import load_config

    cfg = load_config(None, ["method.name=lora_fa", "method.rank=2"])
    method = cfg.method.make(batch_size=8)
    state = method.init(jax.random.key(0), LAYERS)
    assert num_params(state.params) == 2 * (5 + 3)  # B only: d·r per layer
    message, _ = method.encode(state, state.params, jax.random.key(1), RoundControl())
    assert float(message.count) == 2 * (5 + 3)
    bs = [jax.random.normal(jax.random.key(k), (5, 2)) for k in (2, 3)]
    x = jnp.ones((1, 6))
    deltas = [method.delta(state._replace(params={**state.params, "a": {"b": b}}), "a", x) for b in bs]
    mean_b = state._replace(params={**state.params, "a": {"b": (bs[0] + bs[1]) / 2}})
    np.testing.assert_allclose(method.delta(mean_b, "a", x), (deltas[0] + deltas[1]) / 2, rtol=1e-5, atol=1e-6)
