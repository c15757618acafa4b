import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LIGHT, SMALL, interrupt_before_round, patch_build
from jaxdfl.cli import main
from jaxdfl.errors import Interrupted
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


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path, monkeypatch, capsys):
    cfg = LIGHT | {"rounds": 4, "eval_every": 1, "checkpoint_every": 2}  # a program per round, checkpoints every 2
    straight = tmp_path / "straight"
    run(cfg, out=straight, progress=False)

    broken = tmp_path / "broken"
    with monkeypatch.context() as patch:
        patch_build(patch, interrupt_before_round(3))  # Ctrl-C after three completed rounds
        with pytest.raises(Interrupted) as stop:
            run(cfg, out=broken, progress=False)
    assert stop.value.saved_round == 3
    assert sorted(p.name for p in (broken / "checkpoints").iterdir()) == ["2", "3"]  # periodic + on interrupt

    # a hard kill while the newest checkpoint was written: the resume falls back to round 2 with a warning,
    # drops the line of round 3 and redoes round 3; the same when the kill also cut round 3's metrics line
    cut = tmp_path / "cut"
    for f in (broken / "checkpoints" / "3").rglob("*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 3])
    shutil.copytree(broken, cut)
    lines = (cut / "metrics.jsonl").read_text().splitlines(keepends=True)
    assert len(lines) == 3
    (cut / "metrics.jsonl").write_text("".join(lines[:-1]) + lines[-1][:25])
    run(cfg, out=broken, resume=True, progress=False)
    assert "checkpoint of round 3 does not restore" in capsys.readouterr().err
    run(cfg, out=cut, resume=True, progress=False)
    err = capsys.readouterr().err
    assert "the last line was cut short" in err and "checkpoint of round 3 is past the metrics" in err
    assert _read(broken) == _read(straight) == _read(cut)


def test_a_resume_whose_checkpoints_all_fail_refuses_and_keeps_the_folder(tmp_path):
    """Checkpoints without the metrics of their rounds (here: the metrics file emptied) are not silently
    replaced by a run from round 0: the resume stops with one line and leaves every file as it was."""
    from jaxdfl.errors import UserError

    cfg = LIGHT | {"rounds": 2, "checkpoint_every": 1}
    run(cfg, out=tmp_path / "r", progress=False)
    (tmp_path / "r" / "metrics.jsonl").write_text("")
    with pytest.raises(UserError, match=r"no checkpoint of rounds \[1, 2\] restores"):
        run(cfg, out=tmp_path / "r", resume=True, progress=False)
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["1", "2"]


def test_rounds_between_evaluations_run_as_one_program_with_the_loops_numbers(tmp_path, monkeypatch):
    """20 rounds evaluated every 10 dispatch 2 round programs; evaluated every round (a program per round,
    the loop) they give the same numbers."""
    cfg = LIGHT | {"rounds": 20, "checkpoint_every": 0}
    lengths = []

    def count(sim):
        def run_rounds(state, inputs):
            lengths.append(len(inputs.round))
            return sim.run_rounds(state, inputs)

        return sim._replace(run_rounds=run_rounds)

    patch_build(monkeypatch, count)
    run(cfg | {"eval_every": 10}, out=tmp_path / "scan", progress=False)
    assert lengths == [10, 10]
    lengths.clear()
    run(cfg | {"eval_every": 1}, out=tmp_path / "loop", progress=False)
    assert lengths == [1] * 20
    (s_scan, m_scan), (s_loop, m_loop) = _read(tmp_path / "scan"), _read(tmp_path / "loop")
    training = lambda records: [{k: v for k, v in r.items() if "accuracy" not in k} for r in records]  # noqa: E731
    assert training(m_scan) == training(m_loop)
    assert s_scan["final_accuracy"] == s_loop["final_accuracy"]


def test_resume_refuses_a_different_config(tmp_path, capsys):
    run(SMALL, out=tmp_path / "r", progress=False)
    from jaxdfl.errors import UserError

    with pytest.raises(UserError, match="config differs"):
        run(SMALL, ["method.rank=3"], out=tmp_path / "r", resume=True, progress=False)
    with pytest.raises(UserError, match="--resume"):
        run(SMALL, out=tmp_path / "r", progress=False)


def test_a_run_saved_before_a_key_existed_resumes(tmp_path):
    """A config.yaml written by an older jaxdfl lacks the keys added since; at their defaults it is the same
    config, so the run resumes (here at its end: it is evaluated again and gives the same summary)."""
    import yaml

    first, _ = run(SMALL, out=tmp_path / "r", progress=False)
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["stragglers"].pop("buffer_size") == 10  # a key FedBuff added, at its default
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    again, _ = run(SMALL, out=tmp_path / "r", resume=True, progress=False)
    assert again["final_accuracy"] == first["final_accuracy"]


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


def test_a_checkpoint_from_before_a_state_field_existed_restores(tmp_path):
    """SimState gains fields as jaxdfl grows (FedBuff added ``buffer``): an older checkpoint restores into
    today's state when the run does not use the new field, and is refused when it does."""
    from typing import Any, NamedTuple

    import jax.numpy as jnp

    from jaxdfl.sim.checkpoint import Checkpointer

    class Before(NamedTuple):
        adapter: Any
        server: Any = ()

    class After(NamedTuple):
        adapter: Any
        server: Any = ()
        buffer: Any = ()

    saving = Checkpointer(tmp_path)
    saving.save(4, Before(jnp.arange(3.0)))
    saving.close()
    checkpoints = Checkpointer(tmp_path)
    round_, state = checkpoints.restore_newest(After(jnp.zeros(3)))
    assert round_ == 4 and isinstance(state, After) and state.buffer == ()
    assert state.adapter.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="lacks the state's fields"):
        checkpoints.restore(After(jnp.zeros(3), buffer=jnp.zeros(2)))
