"""Paper A part 2 through the engine: AGNES clusters on the D2D network, the inter-cluster exchange, link
accounting and the per-round metrics of a run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdfl.config import load_config
from jaxdfl.sim.engine import build_simulation

CLUSTERED = {"method": {"name": "so_lora", "rank": 2, "density": 0.3},
             "model": {"adapt": ["q", "v", "down"]},
             "topology": {"name": "clusters", "s_max": 0.3, "exchange_every": 2},
             "network": {"name": "d2d", "radius": 300.0}}


@pytest.fixture(scope="module")
def clustered():
    from conftest import SMALL

    return build_simulation(load_config(SMALL | CLUSTERED))


def test_clusters_respect_the_cap_and_the_round_mixes_inside_them(clustered):
    sim = clustered
    labels = sim.topology.labels
    assert 1 < labels.max() + 1 < len(labels), f"want a real clustering, got {labels}"
    w = sim.topology.mixing(0)
    np.testing.assert_array_equal(w != 0, labels[:, None] == labels[None, :])
    state = sim.init_fn(jax.random.key(0))
    density = np.asarray(jax.vmap(sim.method.density)(state.adapter))
    from jaxdfl.metrics import collision_rate

    for c in range(labels.max() + 1):
        assert float(np.max(collision_rate(density[labels == c]))) <= 0.3 + 1e-6


def test_exchange_round_hands_experts_to_other_clusters_and_counts_them(clustered):
    sim = clustered
    state = sim.init_fn(jax.random.key(0))
    w = jnp.asarray(sim.topology.mixing(0))
    state, m0 = sim.round_fn(state, w, jax.random.key(1), None, sim.topology.control(0), sim.positions(0))
    assert not sim.topology.control(0)["exchange"] and sim.topology.control(1)["exchange"]
    for leaf in jax.tree.leaves(state.adapter.memory["shared"]):
        assert not np.asarray(leaf).any()  # nothing handed over before the first exchange
    keep = np.asarray(state.adapter.frozen["keep"]).sum(1)
    before_eval = np.asarray(sim.evaluate_fn(state, w, 0.0))
    state, m1 = sim.round_fn(state, w, jax.random.key(2), None, sim.topology.control(1), sim.positions(1))
    # after the exchange every device's snapshot is its aggregate on its own positions
    for name, mask in state.adapter.memory["mask"].items():
        np.testing.assert_allclose(state.adapter.memory["shared"][name]["b"], state.adapter.params[name]["b"])
        assert np.asarray(mask).sum() > 0
    # every device reaches some other cluster, so every device sends its B entries once in round 2
    assert float(m1["uplink_params"]) == pytest.approx(keep.sum())
    for m in (m0, m1):
        assert int(m["links"]) == int(m["delivered"]) + int(m["outages"])
        sizes = np.bincount(sim.topology.labels)
        assert int(m["links"]) == int((sizes * (sizes - 1)).sum())
        assert float(m["max_delay_s"]) <= sim.config.network.delay_bound * (1 + 1e-4)
    assert float(m1["exchange_delay_s"]) > 0 and float(m0["exchange_delay_s"]) == 0
    # stored experts of the other clusters take part in inference once exchanged
    after_own = np.asarray(sim.evaluate_fn(state, w, 0.0))
    after_all = np.asarray(sim.evaluate_fn(state, w, 1.0))
    assert after_own.shape == before_eval.shape and np.abs(after_all - after_own).max() > 0


def test_run_logs_the_wireless_metrics_every_round(tmp_path):
    from conftest import SMALL

    import jaxdfl

    cfg = SMALL | CLUSTERED | {"rounds": 2, "local_steps": 1}
    summary, _ = jaxdfl.run(cfg, out=tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for r in records:
        for key in ("max_delay_s", "outages", "energy_j", "collision_analytic", "collision_empirical", "num_clusters",
                    "links", "delivered"):
            assert key in r, key
        assert r["num_clusters"] == len(set(summary["cluster_labels"]))
        assert r["collision_analytic"] <= 0.3 + 1e-6
    assert summary["links_total"] == summary["delivered_total"] + summary["outages_total"]


def test_training_through_experts_sees_the_other_experts():
    """With method.train_with_experts the forward pass is the mixture of held experts: identical to the own
    adapter while every other expert's B is still zero (round 1), different once they hold values (round 2)."""
    from conftest import SMALL

    losses = {}
    for flag in (False, True):
        cfg = SMALL | {"method": {"name": "so_lora", "rank": 2, "density": 0.3, "moe_top_k": 0,
                                  "train_with_experts": flag}, "model": {"adapt": ["q", "v"]}}
        sim = build_simulation(load_config(cfg))
        state = sim.init_fn(jax.random.key(0))
        w = jnp.asarray(sim.topology.mixing(0))
        state, m1 = sim.round_fn(state, w, jax.random.key(1))
        state, m2 = sim.round_fn(state, w, jax.random.key(2))
        losses[flag] = (float(m1["train_loss"]), float(m2["train_loss"]))
    assert losses[True][0] == pytest.approx(losses[False][0], rel=1e-5)
    assert abs(losses[True][1] - losses[False][1]) > 1e-3
