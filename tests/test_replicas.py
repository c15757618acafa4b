"""``replicas: S``: S seeds as one more vmapped axis of one program, each replica the plain run of its seed."""

import json

import numpy as np
import pytest

from conftest import LIGHT
from jaxdfl.sim.run import run


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("extra", [
    {},  # dense ring
    # Erdős–Rényi neighbour lists whose widest degree differs between the seeds; devices dropped when their
    # loss goes non-finite (none here, but the alive mask rides along per replica); a sample evaluated
    {"num_devices": 8, "eval_devices": 5, "on_nonfinite": "drop_device",
     "topology": {"name": "erdos_renyi", "edge_prob": 0.3, "mixing_form": "sparse"}},
], ids=["ring", "sparse-er"])
def test_each_replica_is_the_plain_run_of_its_seed(tmp_path, extra):
    cfg = LIGHT | {"checkpoint_every": 0} | extra
    together, _ = run(cfg | {"replicas": 2}, out=tmp_path / "together", progress=False)
    assert together["seeds"] == [3, 4] and len(together["replicas"]) == 2
    metrics = _metrics(tmp_path / "together")
    for r, seed in enumerate(together["seeds"]):
        alone, _ = run(cfg | {"seed": seed}, out=tmp_path / f"seed{seed}", progress=False)
        mine = together["replicas"][r]
        assert mine["seed"] == seed
        for key in ("final_accuracy", "own_task_accuracy", "uplink_params_total", "collision_empirical"):
            assert mine[key] == pytest.approx(alone[key], rel=1e-6, abs=1e-7), key
        assert mine["per_task_accuracy"] == pytest.approx(alone["per_task_accuracy"], abs=1e-6)
        for rec, ref in zip(metrics, _metrics(tmp_path / f"seed{seed}")):
            assert rec["replicas"][r]["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-5)
            assert rec["replicas"][r]["senders"] == ref["senders"]
    finals = [rep["final_accuracy"] for rep in together["replicas"]]
    assert together["final_accuracy"] == pytest.approx(np.mean(finals))
    assert together["std"]["final_accuracy"] == pytest.approx(np.std(finals))
    assert metrics[-1]["accuracy"] == pytest.approx(together["final_accuracy"])
    assert together["num_devices"] == cfg["num_devices"] and together["method"] == "lora"  # shared, as they are


def test_neighbour_lists_of_different_widths_stack_as_the_same_graphs():
    from jaxdfl.topology.neighbours import from_edges, to_dense, widen

    narrow, wide = from_edges(np.array([[0, 1], [1, 2]]), 4), from_edges(np.array([[0, 1], [0, 2], [0, 3]]), 4)
    assert narrow.index.shape[1] < wide.index.shape[1]
    padded = widen(narrow, wide.index.shape[1])
    assert padded.index.shape == wide.index.shape
    np.testing.assert_array_equal(to_dense(padded), to_dense(narrow))
