"""Many processes, one simulation: ``--local-processes 2`` spreads the device axis over two JAX processes
(CPU collectives over gloo) and must give the numbers of one process."""

import json
import subprocess
import sys

import pytest

from conftest import LIGHT, light_yaml
from jaxdfl.cli import _without_local_processes, main
from jaxdfl.sim.run import run


def _numbers(out):
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    drop = lambda d: {k: v for k, v in d.items() if k not in ("wall_s", "processes")}  # noqa: E731
    return drop(summary), [drop(r) for r in records]


def _close(tree):
    """Every float compared to 1e-5: the adapters of the two layouts agree to float rounding (~1e-7), and
    numbers read straight off them (``b_gram_offdiagonal``) carry that rounding."""
    if isinstance(tree, dict):
        return {k: _close(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_close(v) for v in tree)
    return pytest.approx(tree, rel=1e-5, abs=1e-7) if isinstance(tree, float) else tree


def _jaxdfl(*args):
    done = subprocess.run([sys.executable, "-m", "jaxdfl", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_two_processes_give_the_numbers_of_one(tmp_path):
    config = light_yaml(tmp_path)  # 4 devices, checkpoints every round
    run(LIGHT, out=tmp_path / "one", progress=False)
    _jaxdfl("run", config, "--local-processes", "2", "--out", str(tmp_path / "two"), "--no-progress")
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["processes"] == 2  # the mesh really spanned both processes
    assert _numbers(tmp_path / "two") == _close(_numbers(tmp_path / "one"))
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["1", "2"]
    # both processes restore their parts of the last checkpoint (orbax, multi-process) and evaluate it again
    (tmp_path / "two" / "summary.json").unlink()
    _jaxdfl("run", config, "--local-processes", "2", "--out", str(tmp_path / "two"), "--resume", "--no-progress")
    assert _numbers(tmp_path / "two")[0] == _close(_numbers(tmp_path / "one")[0])


def test_the_flag_is_removed_for_the_processes_and_checked(capsys):
    assert _without_local_processes(["run", "c.yaml", "--local-processes", "2", "--out", "x"]) == \
        ["run", "c.yaml", "--out", "x"]
    assert _without_local_processes(["run", "--local-processes=3"]) == ["run"]
    assert main(["run", "--local-processes", "0"]) == 2
    assert "--local-processes 0: must be 1 to 64" in capsys.readouterr().err
