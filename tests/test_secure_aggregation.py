"""Secure aggregation: pairwise masks cancel in the sum, dropped clients' masks are recovered, and the
aggregate equals the plain one to float tolerance."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

import toy
from jaxdfl.core import Message
from jaxdfl.federation.secure import KEY_BITS, pair_masks, secure_mix
from jaxdfl.sim.round import run_rounds
from jaxdfl.topology import graphs, mix
from jaxdfl.topology.mixing import drop_columns
from test_engine import M, inputs

SAMPLED = np.array([True, True, False, True, True, True])


def _message():
    rng = np.random.default_rng(3)
    values = {"a": jnp.asarray(rng.normal(size=(M, 4, 5)), jnp.float32), "b": jnp.asarray(rng.normal(size=(M, 3)),
                                                                                           jnp.float32)}
    return Message(values, None, jnp.float32(0), jnp.float32(0))


def test_pairwise_masks_cancel_over_the_sampled_clients_only():
    masks = np.asarray(pair_masks(jax.random.key(0), jnp.asarray(SAMPLED), jnp.asarray(SAMPLED), 50))
    assert (masks[SAMPLED] != 0).all() and (masks[~SAMPLED] == 0).all()  # every client's mask hides it
    assert (masks.sum(0, dtype=np.uint32) == 0).all()  # and they cancel modulo 2³²
    assert (masks[[0, 1, 3]].sum(0, dtype=np.uint32) != 0).any()  # but not over a subset


def test_the_secure_sum_is_the_plain_sum():
    planned = jnp.asarray(graphs.server_average(np.arange(1.0, M + 1), np.flatnonzero(SAMPLED)))
    message = _message()
    mixed, extra = secure_mix(planned, planned, message, jax.random.key(1), 24)
    plain = mix(planned, message)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), mixed.values, plain.values)
    k = SAMPLED.sum()
    assert float(extra["secagg_bits"]) == k * 2 * KEY_BITS + k * (k - 1) * KEY_BITS


def test_dropped_clients_masks_are_recovered():
    planned = jnp.asarray(graphs.server_average(np.ones(M), np.flatnonzero(SAMPLED)))
    delivered = jnp.asarray(SAMPLED & (np.arange(M) != 1) & (np.arange(M) != 4))
    w = drop_columns(planned, delivered)
    message = _message()
    mixed, extra = secure_mix(planned, w, message, jax.random.key(2), 24)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), mixed.values, mix(w, message).values)
    assert float(extra["secagg_bits"]) == 5 * 2 * KEY_BITS + 5 * 4 * KEY_BITS + 3 * 2 * KEY_BITS


def test_a_server_round_with_secure_aggregation_gives_the_plain_numbers():
    data = toy.device_data(M)
    method = toy.bias_method()
    w = graphs.server_average(np.ones(M), np.flatnonzero(SAMPLED))
    state = toy.init_states(method, optax.adam(0.1), M)
    plain_state, plain = run_rounds(toy.round_step(method, optax.adam(0.1), server=True), state, data, inputs([w, w]))
    secure_state, secure = run_rounds(toy.round_step(method, optax.adam(0.1), server=True, secure_bits=24),
                                      state, data, inputs([w, w]))
    chex.assert_trees_all_close(secure_state.adapter, plain_state.adapter, atol=1e-5)
    np.testing.assert_allclose(secure["uplink_bits"] - plain["uplink_bits"], secure["secagg_bits"])
    assert (np.asarray(secure["secagg_bits"]) > 0).all()
