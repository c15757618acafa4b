import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALL
from jaxdfl.cli import main
from jaxdfl.sim import run as run_module
from jaxdfl.sim.run import run


def _without_wall(records):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in records]


def _read(out):
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("wall_s")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return summary, _without_wall(metrics)


def test_run_writes_every_output(tmp_path):
    summary, state = run(SMALL, out=tmp_path / "a", progress=False)
    out = tmp_path / "a"
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3, 4]
    assert all({"round", "train_loss", "uplink_params", "uplink_bits", "wall_s"} <= set(r) for r in records)
    assert ["accuracy" in r for r in records] == [False, True, False, True]
    for key in ("final_accuracy", "per_task_accuracy", "per_task_chance", "trainable_params", "base_params",
                "uplink_params_total", "rounds", "seed", "wall_s"):
        assert key in summary, key
    assert set(summary["per_task_accuracy"]) == set(summary["per_task_chance"]) == {"shift", "rot90", "invert", "mirror"}
    assert summary["uplink_params_total"] == sum(r["uplink_params"] for r in records)
    assert summary["final_accuracy"] == records[-1]["accuracy"]


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    run(SMALL, out=straight, progress=False)

    broken = tmp_path / "broken"
    real_build = run_module.build_simulation

    def build_then_fail_at_round_3(cfg):
        sim = real_build(cfg)

        def mixing(r):
            if r == 3:
                raise KeyboardInterrupt  # Ctrl-C after three completed rounds
            return sim.topology.mixing(r)

        return sim._replace(topology=sim.topology._replace(mixing=mixing))

    monkeypatch.setattr(run_module, "build_simulation", build_then_fail_at_round_3)
    with pytest.raises(KeyboardInterrupt):
        run(SMALL, out=broken, progress=False)
    monkeypatch.setattr(run_module, "build_simulation", real_build)
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == ["2", "3"]  # periodic + on interrupt

    # a hard kill would not have written the interrupt checkpoint: drop it, so the resume starts at round 2
    # and must discard the metrics line of round 3 before redoing it
    shutil.rmtree(broken / "checkpoints" / "3")
    assert len((broken / "metrics.jsonl").read_text().splitlines()) == 3
    run(SMALL, out=broken, resume=True, progress=False)
    assert _read(broken) == _read(straight)


def test_resume_refuses_a_different_config(tmp_path, capsys):
    run(SMALL, out=tmp_path / "r", progress=False)
    from jaxdfl.errors import UserError

    with pytest.raises(UserError, match="config differs"):
        run(SMALL, ["method.rank=3"], out=tmp_path / "r", resume=True, progress=False)
    with pytest.raises(UserError, match="--resume"):
        run(SMALL, out=tmp_path / "r", progress=False)


def test_cli_user_errors_print_one_line_and_exit_2(capsys):
    assert main(["run", "--set", "nonexistent.key=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonexistent.key" in err[0]
    assert main(["run", "no_such_config"]) == 2
    assert main(["plot", "/no/such/dir"]) == 2


def test_installed_entry_point_exits_2_without_traceback():
    beside = Path(sys.executable).parent / "jaxdfl"  # the venv's script, whether or not the venv is activated
    exe = str(beside) if beside.exists() else shutil.which("jaxdfl")
    if exe is None:
        pytest.skip("the jaxdfl console script is not installed (run `pip install .` first)")
    proc = subprocess.run([exe, "run", "--set", "nonexistent.key=1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nonexistent.key" in proc.stderr
    listing = subprocess.run([exe, "list"], capture_output=True, text=True, check=True).stdout
    assert "quickstart" in listing


def test_quickstart_learns_every_task(tmp_path):
    """The quick start's recipe, cut short: after 10 rounds every task is well above chance."""
    summary, _ = run(None, ["rounds=10", "checkpoint_every=0"], out=tmp_path / "q", progress=False)
    for task, acc in summary["per_task_accuracy"].items():
        assert acc > summary["per_task_chance"][task] + 0.1, (task, acc)
    assert summary["final_accuracy"] > summary["initial_accuracy"] + 0.15
