import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import patch_build, straight_and_resumed
from jaxdfl.config import load_config
from jaxdfl.control import convergence_bound, initial_ratio
from jaxdfl.errors import ConfigError
from jaxdfl.sim.run import run

TSFA = {"seed": 1, "rounds": 4, "num_devices": 12, "local_steps": 2, "batch_size": 8, "eval_every": 4,
        "checkpoint_every": 2, "data": {"partition": "iid"},
        "method": {"name": "soft", "rank": 4, "alpha": 8.0, "zeta": 0.01},
        "topology": {"name": "server", "clients_per_round": 3, "server_weights": "unbiased"},
        "control": {"name": "tsfa", "delay_target": 0.002, "lyapunov_v": 1e-5, "rank_max": 16}}


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tsfa_picks_the_offline_rank_and_its_ratio_reaches_the_clients(tmp_path, monkeypatch):
    sims = []
    patch_build(monkeypatch, lambda sim: sims.append(sim) or sim)
    summary, state = run(TSFA, out=tmp_path / "t", progress=False)
    sim = sims[0]
    c, layers = sim.config.control, sim.layers
    # the offline rank minimises the bound at each rank's Lemma-2 ratio, over every rank up to r_max
    link = dict(sampled=3.0, dims=float(sum(i + o for i, o in layers.values())), bits_per_param=c.bits_per_param,
                bandwidth=c.bandwidth, delay_target=c.delay_target, ratio_min=c.ratio_min)
    ranks = np.arange(1, c.rank_max + 1, dtype=np.float32)
    bounds = convergence_bound(ranks, initial_ratio(ranks, sim.controller.constants, sim.controller.mean_snr, **link),
                               3.0, sim.controller.constants)
    assert summary["rank"] == sim.controller.rank == int(np.argmin(bounds)) + 1
    assert sim.config.method.rank == 4  # the config stays as given; the method runs at the chosen rank
    assert all(p["a"].shape[1] == summary["rank"] for p in state.adapter.params.values())
    records = _records(tmp_path / "t")
    for rec in records:
        assert {"ratio", "delay_s", "queue", "gamma", "bandwidth_min", "bandwidth_max"} <= set(rec)
        assert c.ratio_min <= rec["ratio"] <= 1.0 and rec["bandwidth_min"] <= rec["bandwidth_max"]
        # the controller's ratio is what SOFT used: 3 clients × Σ_layers round(O·r·(d+k)) entries
        per_layer = [round(float(jnp.float32(rec["ratio"]) * summary["rank"] * (i + o))) for i, o in layers.values()]
        assert abs(rec["uplink_params"] - 3 * sum(per_layer)) <= 3 * len(per_layer)  # float32 rounding at .5
    assert len({round(r["ratio"], 6) for r in records}) > 1  # decided anew each round
    queue = 0.0
    for rec in records:
        queue = max(queue + rec["delay_s"] - c.delay_target, 0.0)
        assert rec["queue"] == pytest.approx(queue, rel=1e-5, abs=1e-9)
    assert float(state.controller) == pytest.approx(records[-1]["queue"])  # carried in the state


def test_resume_restores_the_controller_queue(tmp_path, monkeypatch):
    # programs of rounds 1-2 and 3-4: the interrupt comes while rounds 3-4 are planned; fewer adapted maps
    cfg = TSFA | {"model": {"adapt": ["q", "v"]}, "local_steps": 1}
    straight, resumed = straight_and_resumed(cfg, tmp_path, monkeypatch)
    assert resumed == straight


def test_control_needs_server_fl_with_a_sparsifier():
    with pytest.raises(ConfigError, match="control.name"):
        load_config(None, ["control.name=tsfa"])
