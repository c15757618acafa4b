"""jaxdfl learn end to end at toy size: the objective goes down, the design is written and read back by the
retraining runs, and the outputs are all there."""

import json

import numpy as np
import yaml

from conftest import LIGHT
from jaxdfl.cli import main

STUDY = LIGHT | {"data": {"tasks": ["shift", "rot90"]}, "checkpoint_every": 0, "local_steps": 2,
                 "study": {"learn": ["mixing"], "rounds": 2, "steps": 3, "learning_rate": 0.5, "keys": "fixed",
                           "link_weight": 0.01, "retrain_seeds": [0]}}


def test_learn_lowers_the_objective_and_retrains_with_the_design(tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(STUDY))
    out = tmp_path / "study"
    assert main(["learn", str(config), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "weight on same-task devices" in printed and "retrained, learned design" in printed
    records = [json.loads(line) for line in (out / "learn.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert records[-1]["objective"] < records[0]["objective"]  # a fixed rollout key: plain gradient descent
    assert all(r["grad_norm"] > 0 for r in records)
    design = np.load(out / "design.npz")
    w = design["w"]
    assert w.shape == (4, 4) and (w >= 0).all() and np.allclose(w.sum(1), 1.0, atol=1e-5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective_last"] == records[-1]["objective"]
    assert 0 <= summary["design"]["same_task_weight"] <= 1
    learned = yaml.safe_load((out / "retrain" / "learned-seed0" / "config.yaml").read_text())
    assert learned["topology"]["name"] == "matrix" and learned["topology"]["matrix"].endswith("design.npz")
    assert len(summary["retrained_learned"]["final_accuracy"]["values"]) == 1
    for name in ("learn.png", "design.png"):
        assert (out / name).stat().st_size > 0
