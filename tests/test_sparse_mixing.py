"""Sparse mixing (neighbour lists) gives the numbers of the dense [M, M] matrix, from the weights to a run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.config import TopologyConfig
from jaxdfl.metrics import neighbourhood_collision, neighbourhood_collision_rate
from jaxdfl.topology import build_topology, graphs
from jaxdfl.topology.mixing import drop_senders, heard, mix_tree, num_linked, row
from jaxdfl.topology.neighbours import Neighbours, stack, to_dense


@pytest.mark.parametrize("weights", ["metropolis", "uniform"])
@pytest.mark.parametrize("name", ["ring", "kregular", "erdos_renyi", "isolated"])
def test_neighbour_lists_hold_exactly_the_dense_weights(name, weights):
    cfg = TopologyConfig(name=name, degree=3, edge_prob=0.3, weights=weights)
    topo = build_topology(cfg, 12, np.ones(12), seed=0)
    rng = np.random.default_rng([0, 2, 0])  # the generator of the first resample block
    adj = {"ring": lambda: graphs.ring_adjacency(12), "isolated": lambda: np.zeros((12, 12), bool),
           "kregular": lambda: graphs.random_regular_adjacency(12, 3, rng),
           "erdos_renyi": lambda: graphs.erdos_renyi_adjacency(12, 0.3, rng)}[name]()
    dense = (graphs.metropolis_hastings if weights == "metropolis" else graphs.uniform_weights)(adj)
    lists = topo.neighbours(0)
    assert (lists.index[:, 0] == np.arange(12)).all()  # column 0: the device itself
    np.testing.assert_array_equal(to_dense(lists), dense)
    np.testing.assert_array_equal(topo.mixing(0), dense)


def test_large_erdos_renyi_draws_are_simple_graphs_with_the_right_density():
    m, p = 20_000, 4e-4  # above the dense-draw limit: the edge-count sampler
    edges = graphs.erdos_renyi_edges(m, p, np.random.default_rng(0))
    assert (edges[:, 0] < edges[:, 1]).all() and edges.max() < m
    assert len(np.unique(edges, axis=0)) == len(edges)
    expected = p * m * (m - 1) / 2  # 79,996 edges; the std of the count is about 283
    assert abs(len(edges) - expected) < 5 * np.sqrt(expected)
    rows = np.bincount(edges[:, 0], minlength=m)[: m // 2].sum()  # pairs with a in the first half of rows
    assert abs(rows / len(edges) - 0.75) < 0.01  # row a holds m − 1 − a slots: 3/4 of them lie there


def _random_case(m=9, width=4, seed=0):
    """Random lists (distinct senders per row, padded with the device itself at weight 0) and their W."""
    rng = np.random.default_rng(seed)
    index = np.repeat(np.arange(m)[:, None], width, axis=1)
    weight = np.zeros((m, width), np.float32)
    weight[:, 0] = rng.random(m)
    for i in range(m):
        others = rng.choice(np.delete(np.arange(m), i), size=rng.integers(0, width), replace=False)
        index[i, 1:1 + len(others)] = others
        weight[i, 1:1 + len(others)] = rng.random(len(others))
    weight[3, 1:] = 0.0  # a device that hears only itself
    lists = Neighbours(jnp.asarray(index, jnp.int32), jnp.asarray(weight))
    return lists, to_dense(lists)


def test_every_mixing_operation_agrees_between_the_two_forms():
    lists, dense = _random_case()
    x = {"a": jax.random.normal(jax.random.key(0), (9, 5, 3)), "b": jax.random.normal(jax.random.key(1), (9, 2))}
    for got, want in zip(jax.tree.leaves(mix_tree(lists, x)), jax.tree.leaves(mix_tree(dense, x))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    alive = jnp.array([True, False, True, True, True, False, True, True, True])
    np.testing.assert_allclose(to_dense(drop_senders(lists, alive)), drop_senders(dense, alive), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(heard(lists), heard(dense))
    np.testing.assert_allclose(row(lists, 0), row(dense, 0))
    np.testing.assert_array_equal(num_linked(lists), num_linked(dense))
    masks = {"a": (jax.random.uniform(jax.random.key(2), (9, 6, 4)) < 0.3).astype(jnp.float32),
             "b": (jax.random.uniform(jax.random.key(3), (9, 10)) < 0.6).astype(jnp.float32)}
    np.testing.assert_allclose(neighbourhood_collision(lists, masks), neighbourhood_collision(dense, masks))
    np.testing.assert_allclose(neighbourhood_collision_rate(lists, masks), neighbourhood_collision_rate(dense, masks),
                               rtol=1e-6)


def test_rounds_stack_lists_of_different_widths():
    narrow = Neighbours(np.array([[0], [1]], np.int32), np.ones((2, 1), np.float32))
    wide = Neighbours(np.array([[0, 1], [1, 0]], np.int32), np.full((2, 2), 0.5, np.float32))
    both = stack([narrow, wide])
    assert both.index.shape == (2, 2, 2)
    np.testing.assert_array_equal(to_dense(both), np.stack([np.eye(2), np.full((2, 2), 0.5)]))


@pytest.mark.parametrize("change", [
    {"topology": {"name": "kregular", "degree": 3}, "on_nonfinite": "drop_device"},
    {"topology": {"name": "erdos_renyi", "edge_prob": 0.3}, "method": {"name": "tlora", "rank": 2, "ratio": 0.3}},
])
def test_a_run_gives_the_same_numbers_with_sparse_and_dense_mixing(small_config, change, tmp_path):
    from jaxdfl import run

    out = {}
    for form in ("dense", "sparse"):
        cfg = small_config | change | {"rounds": 2, "eval_every": 2, "checkpoint_every": 0, "local_steps": 1,
                                       "model": {"adapt": ["q", "v"]}}
        cfg["topology"] = cfg["topology"] | {"mixing_form": form}
        out[form], _ = run(cfg, out=tmp_path / form, progress=False)
    for key in ("final_accuracy", "train_loss", "uplink_bits_total", "collision_empirical", "collision_analytic"):
        if key in out["dense"]:
            np.testing.assert_allclose(out["sparse"][key], out["dense"][key], rtol=1e-4, err_msg=key)
    assert out["sparse"]["num_clusters"] == out["dense"]["num_clusters"]


def test_sparse_mixing_refuses_a_topology_without_neighbour_lists(small_config):
    from jaxdfl import build_simulation, load_config
    from jaxdfl.errors import ConfigError

    cfg = small_config | {"topology": {"name": "full", "mixing_form": "sparse"}}
    with pytest.raises(ConfigError, match="mixing_form: sparse"):
        build_simulation(load_config(cfg))
