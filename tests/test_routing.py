"""Expert mixtures report three accuracies: the paper's mixture, each device's own adapter alone, and oracle
routing (each task answered by the held experts trained on it), each checked against a direct computation."""

import functools
import json

import jax
import numpy as np
import pytest

from conftest import LIGHT
from jaxdfl.config import load_config
from jaxdfl.core import adapter_hook
from jaxdfl.sim.build import build_simulation
from jaxdfl.sim.evaluate import task_accuracies
from jaxdfl.sim.run import run

# 8 devices, 2 per task; by_task: each device aggregates with (and holds the experts of) its own task's devices
CONFIG = LIGHT | {"num_devices": 8, "rounds": 2, "checkpoint_every": 0, "topology": {"name": "by_task"}}


@functools.cache
def _trained(method: str):
    sim = build_simulation(load_config(CONFIG | {"method": {"name": method, "rank": 2}}))
    state = sim.init_fn(jax.random.key(0))
    state, _ = sim.run_rounds(state, sim.inputs(0, 2))
    return sim, state


@pytest.fixture(scope="module", params=["so_lora", "lori"])
def trained(request):
    return _trained(request.param)


def test_own_adapter_is_each_devices_delta_alone(trained):
    sim, state = trained
    own = np.asarray(sim.evaluate_fn(state, sim.mixing(1), 0.0, "own"))
    for i in range(sim.config.num_devices):
        adapter = jax.tree.map(lambda a: a[i], state.adapter)
        direct = task_accuracies(sim.objective, sim.base, adapter_hook(sim.method, adapter), sim.test)
        np.testing.assert_allclose(own[i], np.asarray(direct), atol=1e-6)


def test_oracle_routing_is_the_mixture_on_held_tasks_and_the_base_elsewhere(trained):
    """Under by_task every expert a device holds is of its own task: oracle routing answers the device's own
    task with the full mixture, and every other task with no expert at all, i.e. the base model."""
    sim, state = trained
    w = sim.mixing(1)
    mixture = np.asarray(sim.evaluate_fn(state, w, 0.0))
    oracle = np.asarray(sim.evaluate_fn(state, w, 0.0, "oracle"))
    base = np.asarray(sim.base_accuracy_fn())
    own = sim.data.task_of_device
    rows = np.arange(len(own))
    np.testing.assert_allclose(oracle[rows, own], mixture[rows, own], atol=1e-6)
    others = np.ones_like(oracle, bool)
    others[rows, own] = False
    np.testing.assert_allclose(oracle[others], np.broadcast_to(base, oracle.shape)[others], atol=1e-6)


def test_a_run_writes_the_three_accuracies(tmp_path):
    summary, _ = run(CONFIG | {"method": {"name": "so_lora", "rank": 2}}, out=tmp_path / "r", progress=False)
    written = json.loads((tmp_path / "r" / "summary.json").read_text())
    for key in ("final_accuracy", "accuracy_own_adapter", "accuracy_oracle_routing"):
        assert 0.0 <= written[key] <= 1.0, key
    assert set(written["per_task_accuracy_oracle_routing"]) == set(written["per_task_accuracy"])
    assert all(0.0 <= v <= 1.0 for v in written["routing_share"].values())
    assert 0.0 < written["routing_share_blind"] < 1.0


def test_replicas_report_each_seeds_three_accuracies_as_its_plain_run(tmp_path):
    """The own-adapter, oracle and share evaluations run for every replica in one program."""
    cfg = CONFIG | {"method": {"name": "so_lora", "rank": 2}}
    together, _ = run(cfg | {"replicas": 2}, out=tmp_path / "together", progress=False)
    for r, seed in enumerate(together["seeds"]):
        alone, _ = run(cfg | {"seed": seed}, out=tmp_path / f"seed{seed}", progress=False)
        mine = together["replicas"][r]
        for key in ("accuracy_own_adapter", "accuracy_oracle_routing", "routing_share_mean", "routing_share_blind"):
            assert mine[key] == pytest.approx(alone[key], abs=1e-6), key
        assert mine["per_task_accuracy_oracle_routing"] == pytest.approx(alone["per_task_accuracy_oracle_routing"],
                                                                         abs=1e-6)
    assert together["accuracy_oracle_routing"] == pytest.approx(
        np.mean([rep["accuracy_oracle_routing"] for rep in together["replicas"]]))


def test_routing_share_counts_the_top_k_components_of_each_inputs_task(trained):
    """Under by_task a device holds only experts of its own task: all that the top-k keeps comes from the
    input's task on its own task's inputs, and none of it on the others'."""
    sim, state = trained
    shares = sim.evaluate_fn(state, sim.mixing(1), 0.0, "share")
    assert set(shares) == set(sim.layers)
    own = sim.data.task_of_device
    for name, share in shares.items():
        share = np.asarray(share)  # [M, T]
        expected = (np.arange(share.shape[1])[None] == own[:, None]).astype(float)
        np.testing.assert_allclose(share, expected, atol=1e-6, err_msg=name)


def test_routing_share_without_top_k_is_each_tasks_share_of_held_experts():
    """LoRI sums every held expert (no top-k), so each expert keeps all its components: on task t's inputs a
    device's share is the share of the experts it holds that were trained on t, whatever the graph (here a
    random one, where devices hold experts of several tasks)."""
    from jaxdfl.sim.summary import routing_share

    sim, state = _trained("lori")
    m = sim.config.num_devices
    rng = np.random.default_rng(0)
    links = np.triu(rng.random((m, m)) < 0.5, 1)
    held = links | links.T | np.eye(m, dtype=bool)
    w = (held / held.sum(1, keepdims=True)).astype(np.float32)
    tasks = sim.data.task_of_device
    expected = np.stack([(held & (tasks == t)).sum(1) / held.sum(1) for t in range(len(sim.data.task_names))], 1)
    assert ((expected > 0) & (expected < 1)).any()
    shares = sim.evaluate_fn(state, w, 0.0, "share")
    for name, share in shares.items():
        np.testing.assert_allclose(np.asarray(share), expected, atol=1e-6, err_msg=name)
    summary = routing_share(sim, shares, w, 0.0)  # the means summary.json reports; blind is 1/T on average
    assert summary["routing_share_blind"] == pytest.approx(expected.mean())
    assert summary["routing_share_mean"] == pytest.approx(expected.mean(), abs=1e-6)
