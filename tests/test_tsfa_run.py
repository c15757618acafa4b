import json

import jax
import jax.numpy as jnp
import pytest

from jaxdfl.config import load_config
from jaxdfl.control import offline_rank
from jaxdfl.control.server import _constants
from jaxdfl.errors import ConfigError
from jaxdfl.models import adapted_layers, load_model
from jaxdfl.network import client_distances, mean_snr
from jaxdfl.sim import run as run_module
from jaxdfl.sim.run import run

TSFA = {"seed": 1, "rounds": 4, "num_devices": 12, "local_steps": 2, "batch_size": 8, "eval_every": 4,
        "checkpoint_every": 2, "data": {"partition": "iid"},
        "method": {"name": "soft", "rank": 4, "alpha": 8.0, "zeta": 0.01},
        "topology": {"name": "server", "clients_per_round": 3, "server_weights": "unbiased"},
        "control": {"name": "tsfa", "delay_target": 0.002, "lyapunov_v": 1e-5, "rank_max": 16}}


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tsfa_picks_the_offline_rank_and_its_ratio_reaches_the_clients(tmp_path):
    summary, _ = run(TSFA, out=tmp_path / "t", progress=False)
    cfg = load_config(TSFA)
    model, _ = load_model(cfg.model)
    layers = adapted_layers(model, cfg.model.adapt)
    c = cfg.control
    dist = client_distances(jax.random.fold_in(jax.random.key(cfg.seed), 3), 12, c.radius)
    rank, _ = offline_rank(_constants(cfg), mean_snr(dist, c.power, c.noise, c.path_loss_exp), sampled=3.0,
                           dims=float(sum(i + o for i, o in layers.values())), bits_per_param=c.bits_per_param,
                           bandwidth=c.bandwidth, delay_target=c.delay_target, ratio_min=c.ratio_min)
    assert summary["rank"] == int(rank)
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


def test_resume_restores_the_controller_queue(tmp_path, monkeypatch):
    run(TSFA, out=tmp_path / "straight", progress=False)
    real_build = run_module.build_simulation

    def fail_at_round_3(cfg):
        sim = real_build(cfg)

        def mixing(r):
            if r == 3:
                raise KeyboardInterrupt
            return sim.topology.mixing(r)

        return sim._replace(topology=sim.topology._replace(mixing=mixing))

    monkeypatch.setattr(run_module, "build_simulation", fail_at_round_3)
    with pytest.raises(KeyboardInterrupt):
        run(TSFA, out=tmp_path / "broken", progress=False)
    monkeypatch.setattr(run_module, "build_simulation", real_build)
    run(TSFA, out=tmp_path / "broken", resume=True, progress=False)
    strip = lambda recs: [{k: v for k, v in r.items() if k != "wall_s"} for r in recs]  # noqa: E731
    assert strip(_records(tmp_path / "broken")) == strip(_records(tmp_path / "straight"))


def test_control_needs_server_fl_with_a_sparsifier():
    with pytest.raises(ConfigError, match="control.name"):
        load_config(None, ["control.name=tsfa"])
