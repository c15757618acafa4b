"""LoRA of a different rank on every device: HetLoRA's zero-padded average with truncation, and FLoRA's
stacking (the exact sum of the devices' products), on the toy objective."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import toy
from jaxdfl.adapters.hetero import HeteroLoraConfig
from jaxdfl.errors import ConfigError
from jaxdfl.sim.round import run_rounds
from jaxdfl.sim.state import SimState
from jaxdfl.topology import graphs
from test_engine import M, inputs

RANKS = (1, 3)  # of the toy map's 3 outputs: devices 0, 2, 4 rank 1, devices 1, 3, 5 rank 3
W = graphs.server_average(np.arange(1.0, M + 1), np.arange(M))


def _states(name, optimizer):
    cfg = HeteroLoraConfig(name=name, rank=3, alpha=6.0, ranks=RANKS)
    method = cfg.make(4)
    ranks = jnp.asarray(cfg.per_device(M))
    adapter = jax.vmap(lambda k, r: method.init(k, toy.LAYERS, r))(jax.random.split(jax.random.key(0), M), ranks)
    return method, SimState(adapter, jax.vmap(optimizer.init)(adapter.params)), np.asarray(ranks)


def _rounds(method, state, w):
    data = toy.device_data(M)
    return run_rounds(toy.round_step(method, optax.adam(0.1)), state, data, inputs([w]))[0]


def test_devices_get_their_ranks_in_turn_and_rank_is_the_largest():
    assert HeteroLoraConfig(rank=8, ranks=(2, 4, 8)).per_device(5).tolist() == [2, 4, 8, 2, 4]
    with pytest.raises(ConfigError, match="largest"):
        HeteroLoraConfig(rank=4, ranks=(2, 8))


def test_hetlora_averages_zero_padded_factors_and_truncates():
    method, state, ranks = _states("hetlora", optax.adam(0.1))
    local = _rounds(method, state, np.eye(M)).adapter.params["lin"]
    small = ranks == 1
    assert np.all(np.asarray(local["a"])[small, 1:] == 0) and np.all(np.asarray(local["b"])[small][:, :, 1:] == 0)
    mixed = _rounds(method, state, W).adapter.params["lin"]
    padded = np.einsum("j,j...->...", W[0], np.asarray(local["a"]))  # ranks a device lacks count as zeros
    np.testing.assert_allclose(np.asarray(mixed["a"])[~small], np.broadcast_to(padded, (3, 3, toy.K)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mixed["a"])[small][:, 0], np.broadcast_to(padded[0], (3, toy.K)),
                               rtol=1e-5)
    assert np.all(np.asarray(mixed["a"])[small][:, 1:] == 0)  # truncated to rank 1


def test_flora_folds_the_exact_sum_of_products_and_restarts_b():
    method, state, ranks = _states("flora", optax.adam(0.1))
    # alone (W = I), each device folds in its own product scale·B_j A_j, of rank r_j
    own = np.asarray(_rounds(method, state, np.eye(M)).adapter.memory["lin"])
    assert [np.linalg.matrix_rank(p, tol=1e-6) for p in own] == ranks.tolist()
    new = _rounds(method, state, W)
    expected = np.einsum("j,j...->...", W[0], own)  # the stacked factors' product: no cross terms
    np.testing.assert_allclose(np.asarray(new.adapter.memory["lin"]), np.broadcast_to(expected, own.shape),
                               rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(new.adapter.params["lin"]["b"]) == 0)  # LoRA restarts on top
    x = jax.random.normal(jax.random.key(5), (2, toy.K))
    one = jax.tree.map(lambda v: v[1], new.adapter)
    np.testing.assert_allclose(method.delta(one, "lin", x), x @ expected.T, rtol=1e-4, atol=1e-6)


def test_a_padded_average_is_not_the_average_of_products():
    """Why both exist: averaging factors adds cross terms B_i A_j, stacking does not."""
    method, state, _ = _states("hetlora", optax.adam(0.1))
    local = _rounds(method, state, np.eye(M)).adapter.params["lin"]
    a, b = np.asarray(local["a"]), np.asarray(local["b"])
    of_average = 2.0 * np.einsum("j,j...->...", W[0], b) @ np.einsum("j,j...->...", W[0], a)
    average_of = 2.0 * np.einsum("j,jor,jri->oi", W[0], b, a)
    assert np.abs(of_average - average_of).max() > 1e-3
