"""Realistic federations from the config: availability plans, config errors, and one run with every section on."""

import numpy as np
import pytest

import jaxdfl
from conftest import straight_and_resumed
from jaxdfl.errors import ConfigError
from jaxdfl.federation import availability_plan, byzantine_devices, load_trace, sample_online
from jaxdfl.federation.config import AvailabilityConfig


def test_availability_draws_depend_only_on_seed_and_round():
    plan = availability_plan(AvailabilityConfig(rate=0.3), 1000, seed=4)
    np.testing.assert_array_equal(plan(7), plan(7))
    assert abs(plan(7).mean() - 0.3) < 0.05 and (plan(7) != plan(8)).any()
    rates = availability_plan(AvailabilityConfig(rates=(0.0, 1.0, 0.0)), 3, seed=0)
    assert all(rates(r).tolist() == [False, True, False] for r in range(5))
    assert availability_plan(AvailabilityConfig(), 5, 0) is None


@pytest.mark.parametrize("suffix", [".csv", ".npy"])
def test_a_trace_file_wraps_around(tmp_path, suffix):
    trace = np.array([[1, 0, 1], [0, 0, 1]])
    path = tmp_path / f"trace{suffix}"
    np.save(path, trace) if suffix == ".npy" else np.savetxt(path, trace, delimiter=",", fmt="%d")
    plan = availability_plan(AvailabilityConfig(trace=str(path)), 2, seed=0)
    assert plan(1).tolist() == [False, False] and plan(5).tolist() == [True, True]


def test_bad_availability_settings_are_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\n0,1\n")
    with pytest.raises(ConfigError, match="only 0 and 1"):
        load_trace(str(bad), 2)
    with pytest.raises(ConfigError, match="one row per device"):
        load_trace(str(bad), 3)
    with pytest.raises(ConfigError, match="no file"):
        load_trace(str(tmp_path / "missing.npy"), 2)
    with pytest.raises(ConfigError, match="one probability per device"):
        availability_plan(AvailabilityConfig(rates=(0.5, 0.5)), 3, 0)
    with pytest.raises(ConfigError, match="only one of"):
        jaxdfl.load_config(None, ["availability.rate=0.5", f"availability.trace={bad}"])


def test_a_server_samples_online_clients_first():
    rng = np.random.default_rng(0)
    online = np.array([True, False, True, False, False])
    assert sample_online(rng, online, 2).tolist() == [0, 2]
    picked = sample_online(rng, online, 3)  # one slot left: an offline client, masked in the program
    assert {0, 2} <= set(picked.tolist()) and len(set(picked.tolist())) == 3


@pytest.mark.parametrize("overrides, match", [
    (["server_optimizer.name=fedadam"], "needs topology.name=server"),
    (["attack.kind=sign_flip"], "needs a share > 0"),
    (["attack.kind=label_flip", "attack.share=0.2", "data.name=text_tasks", "data.tasks=[reading]",
      "model.name=pretrained", "model.checkpoint=smollm2-135m-instruct"], "text tasks"),
    (["aggregation.trim=0.5"], "trim"),
    (["secure_aggregation.enabled=true"], "needs topology.name=server"),
    (["scaffold.enabled=true"], "needs topology.name=server"),
    (["secure_aggregation.enabled=true", "topology.name=server", "aggregation.rule=krum"], "aggregation.rule: mean"),
    (["stragglers.rule=buffered"], "needs topology.name=server"),
    (["stragglers.rule=buffered", "topology.name=server", "topology.clients_per_round=2"],
     "does not combine with topology.clients_per_round"),
    (["stragglers.buffer_size=0"], "buffer_size"),
])
def test_config_errors_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        jaxdfl.load_config(None, overrides)


def test_byzantine_sets_are_fixed_per_seed():
    a, b = byzantine_devices(0.3, 20, 0), byzantine_devices(0.3, 20, 1)
    assert a.sum() == b.sum() == 6 and (a != b).any()
    np.testing.assert_array_equal(a, byzantine_devices(0.3, 20, 0))
    assert byzantine_devices(0.01, 20, 0).sum() == 1


def test_a_run_with_every_section_on(tmp_path):
    """A server run, two seeds in one program: 70% availability, stragglers dropped at the deadline, 25% of the
    clients scaling their update ×10, a trimmed mean, FedAvgM, FedProx and SCAFFOLD. The accounting holds over the run
    and the summary reports it."""
    overrides = ["rounds=2", "num_devices=8", "local_steps=2", "batch_size=8", "eval_every=2", "replicas=2",
                 "topology.name=server", "topology.clients_per_round=4", "availability.rate=0.7",
                 "attack.kind=scale", "attack.share=0.25", "aggregation.rule=trimmed_mean",
                 "server_optimizer.name=fedavgm", "optimizer.prox_mu=0.01", "stragglers.spread=0.6",
                 "stragglers.rule=drop", "scaffold.enabled=true"]
    summary, _ = jaxdfl.run(None, overrides, out=tmp_path / "run", progress=False)
    assert summary["status"] == "finished" and np.isfinite(summary["final_accuracy"])
    for replica in summary["replicas"]:
        total = replica["messages_total"]
        assert total["planned"] == total["delivered"] + total["lost_unavailable"] + total["lost_late"] + \
            total["lost_dropped"] + total["lost_outage"]
        assert len(replica["byzantine_devices"]) == 2 and 0 < replica["online_share"] <= 1
    assert summary["replicas"][0]["byzantine_devices"] != summary["replicas"][1]["byzantine_devices"]


def test_a_buffered_run_accounts_for_every_arrival(tmp_path):
    """FedBuff with two seeds in one program: uploads are the arrivals (planned = delivered), slow jobs make
    the server wait and updates stale, and the summary reports both."""
    overrides = ["rounds=4", "num_devices=8", "local_steps=2", "batch_size=8", "eval_every=4", "replicas=2",
                 "topology.name=server", "stragglers.spread=0.8", "stragglers.rule=buffered",
                 "stragglers.buffer_size=4", "server_optimizer.name=fedavgm"]
    summary, _ = jaxdfl.run(None, overrides, out=tmp_path / "run", progress=False)
    assert summary["status"] == "finished" and np.isfinite(summary["final_accuracy"])
    assert summary["final_accuracy"] != summary["initial_accuracy"]  # the global model moved
    for replica in summary["replicas"]:
        total = replica["messages_total"]
        assert total["planned"] == total["delivered"] and 0 < total["delivered"] < 4 * 8  # someone was slow
        assert 1 <= replica["server_steps"] <= 4 and replica["staleness_mean"] > 0


def test_a_buffered_run_resumes_with_its_buffer(tmp_path, monkeypatch):
    """Interrupted while rounds 3-4 are planned and resumed from round 2's checkpoint, a FedBuff run logs what
    the uninterrupted one does: the buffer, versions and jobs in flight travel in the checkpoint."""
    cfg = {"rounds": 4, "num_devices": 6, "local_steps": 2, "batch_size": 8, "eval_every": 4, "checkpoint_every": 2,
           "topology": {"name": "server"}, "stragglers": {"spread": 0.8, "rule": "buffered", "buffer_size": 3}}
    straight, resumed = straight_and_resumed(cfg, tmp_path, monkeypatch)
    assert resumed == straight
    assert any(r["in_flight"] > 0 for r in straight)
