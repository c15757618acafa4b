"""Paper A part 2 through the engine: AGNES clusters on the D2D network, the inter-cluster exchange, link
accounting and the per-round metrics of a run."""

import json

import jax
import numpy as np
import pytest

from jaxdfl.config import load_config
from jaxdfl.core import expert_views, layer_density
from jaxdfl.metrics import collision_rate
from jaxdfl.sim.build import build_simulation

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
    density = jax.vmap(lambda a: layer_density(sim.method, a))(state.adapter)
    density = np.stack([np.asarray(d) for d in density.values()], 1)
    for c in range(labels.max() + 1):
        assert float(np.max(collision_rate(density[labels == c]))) <= 0.3 + 1e-6


def test_exchange_round_hands_experts_to_other_clusters_and_counts_them(clustered):
    sim = clustered
    state = sim.init_fn(jax.random.key(0))
    controls = [sim.topology.control(r) for r in range(5)]
    assert [bool(c.exchange) for c in controls] == [False, True, False, True, False]  # every 2nd round ends so
    assert [float(c.stored) for c in controls] == [0, 0, 1, 1, 1]  # held from the round after the first
    keep = np.asarray(state.adapter.frozen.keep).sum(1)
    state, m = sim.run_rounds(state, sim.inputs(0, 2))
    # after the exchange every device's snapshot is its aggregate on its own positions
    for name, mask in state.adapter.memory.mask.items():
        np.testing.assert_allclose(state.adapter.memory.shared[name], state.adapter.params[name]["b"])
        assert np.asarray(mask).sum() > 0
    # every device reaches some other cluster, so every device sends its B entries once in round 2
    assert float(m["uplink_params"][1]) == pytest.approx(keep.sum())
    sizes = np.bincount(sim.topology.labels)
    for r in range(2):
        assert int(m["links"][r]) == int(m["delivered"][r]) + int(m["outages"][r])
        assert int(m["links"][r]) == int((sizes * (sizes - 1)).sum())
        assert float(m["max_delay_s"][r]) <= sim.config.network.delay_bound * (1 + 1e-4)
    assert float(m["exchange_delay_s"][1]) > 0 and float(m["exchange_delay_s"][0]) == 0
    # once stored, a device's experts are its own cluster's (held) and every other cluster's (stored)
    labels = sim.topology.labels
    view = expert_views(None, sim.topology.mixing(2), sim.topology.control(2).stored)
    same = labels[:, None] == labels[None, :]
    np.testing.assert_array_equal(view.held, same)
    np.testing.assert_array_equal(view.stored, ~same)


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
