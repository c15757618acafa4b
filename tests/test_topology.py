import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.adapters.base import Message
from jaxdfl.config import TopologyConfig
from jaxdfl.topology import build_topology, graphs, mix, mix_dense


@pytest.mark.parametrize("cfg", [
    TopologyConfig(name="ring"), TopologyConfig(name="full"), TopologyConfig(name="isolated"),
    TopologyConfig(name="kregular", degree=3), TopologyConfig(name="erdos_renyi", edge_prob=0.4),
    TopologyConfig(name="erdos_renyi", weights="uniform"), TopologyConfig(name="server", clients_per_round=3),
])
def test_every_mixing_matrix_is_row_stochastic_and_reproducible(cfg):
    topo = build_topology(cfg, 10, np.arange(1, 11), seed=0)
    for r in range(3):
        w = topo.mixing(r)
        assert w.shape == (10, 10) and (w >= 0).all()
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)
        np.testing.assert_array_equal(w, build_topology(cfg, 10, np.arange(1, 11), seed=0).mixing(r))
    if cfg.name != "server" and cfg.weights == "metropolis":
        np.testing.assert_allclose(w, w.T, atol=1e-7)


def test_ring_weights_a_third_each():
    w = graphs.metropolis_hastings(graphs.ring_adjacency(5))
    assert np.allclose(w[2, [1, 2, 3]], 1 / 3) and w[2, [0, 4]].sum() == 0


def test_random_regular_graph_has_the_degree_and_no_loops():
    adj = graphs.random_regular_adjacency(12, 3, np.random.default_rng(1))
    assert (adj.sum(1) == 3).all() and not adj.diagonal().any() and (adj == adj.T).all()
    circulant = graphs.random_regular_adjacency(12, 3, np.random.default_rng(1), swaps_per_edge=0)
    assert (adj != circulant).any()  # the swaps really randomise


def test_server_sampling_weights_by_data_size():
    sizes = np.array([1.0, 2, 3, 4, 5, 6])
    topo = build_topology(TopologyConfig(name="server", clients_per_round=2), 6, sizes, seed=0)
    w = topo.mixing(0)
    sampled = np.flatnonzero(w[0])
    assert len(sampled) == 2 and (w == w[0]).all()
    np.testing.assert_allclose(w[0, sampled], sizes[sampled] / sizes[sampled].sum(), rtol=1e-6)
    assert ((w * (1 - np.eye(6))) != 0).any(0).sum() == 2  # two clients transmit
    draws = {tuple(np.flatnonzero(topo.mixing(r)[0])) for r in range(10)}
    assert len(draws) > 1  # resampled every round by default


def test_dense_mixing_is_the_matrix_product():
    w = np.random.default_rng(0).random((4, 4)).astype(np.float32)
    x = np.random.default_rng(1).random((4, 3, 2)).astype(np.float32)
    np.testing.assert_allclose(mix_dense(jnp.asarray(w), {"x": x})["x"], np.einsum("ij,jab->iab", w, x), rtol=1e-6)


def test_sparse_mixing_normalises_by_the_mask_mass():
    w = jnp.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.0, 1.0]])
    values = jnp.array([[2.0, 9.0], [4.0, 6.0], [7.0, 8.0]])
    mask = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    out = mix(w, Message({"v": values}, {"v": mask}, jnp.zeros(3), jnp.zeros(3)))
    # device 0, entry 0: both neighbours sent -> (0.5*2 + 0.5*4) / 1 ; entry 1: only device 1 sent 6
    np.testing.assert_allclose(out.values["v"][0], [3.0, 6.0])
    # device 1, entry 0: (0.25*2 + 0.5*4) / 0.75
    np.testing.assert_allclose(out.values["v"][1, 0], (0.5 + 2.0) / 0.75, rtol=1e-6)
    # device 2 hears only itself and sent nothing: mass 0, value 0
    np.testing.assert_allclose(out.mass["v"][2], [0.0, 0.0])
    np.testing.assert_allclose(out.values["v"][2], [0.0, 0.0])
