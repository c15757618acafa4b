"""What a run does when things go wrong: diverged devices, two runs in one folder, Ctrl-C, damaged files, bad
inputs. Each test re-tries one of the failures a user met (issue 15) and checks the documented behaviour."""

import json
import os
import signal

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import LIGHT, light_yaml, patch_build
from jaxdfl.cli import main
from jaxdfl.errors import ConfigError, UserError
from jaxdfl.sim.run import run
from jaxdfl.sim.run_folder import RunFolder

QUICK = LIGHT


def _refuse(token):
    raise ValueError(f"non-standard JSON token {token}")


def _strict_records(path):
    """metrics.jsonl parsed by a strict JSON reader (bare NaN or Infinity would raise)."""
    return [json.loads(line, parse_constant=_refuse) for line in path.read_text().splitlines()]


@pytest.fixture
def poisoned(monkeypatch):
    """Runs whose device 2 trains on NaN images."""
    from jaxdfl.sim import build as build_module

    real = build_module.DeviceData

    def poisoned_data(base, x, y, index, n, *rest):  # x is the pool: poison the rows device 2 holds
        return real(base, x.at[index[2, :int(n[2])]].set(jnp.nan), y, index, n, *rest)

    monkeypatch.setattr(build_module, "DeviceData", poisoned_data)


def test_a_diverged_run_stops_with_exit_3_and_strict_json(tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["run", "--set", "optimizer.learning_rate=1e6", "--set", "rounds=10", "--out", str(out),
                 "--no-progress"])  # the quick start, as a user tried it
    assert code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "round 1 diverged" in err[0] and "8 of 8 devices" in err[0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["diverged_round"] == 1
    assert summary["diverged_devices"] == list(range(8)) and summary["saved_round"] == 0
    records = _strict_records(out / "metrics.jsonl")
    assert [r["round"] for r in records] == [1] and records[0]["train_loss"] is None
    assert records[0]["nonfinite"] == ["train_loss"] and records[0]["nonfinite_devices"] == 8
    assert not any((out / "checkpoints").iterdir())  # nothing non-finite is ever checkpointed
    assert main(["plot", str(out)]) == 0  # the plot skips what is not finite


def test_drop_device_takes_a_diverged_device_out_of_mixing(tmp_path, poisoned):
    summary, state = run(QUICK | {"on_nonfinite": "drop_device"}, out=tmp_path / "drop", progress=False)
    assert summary["status"] == "finished" and summary["dropped_devices"] == [2]
    assert np.asarray(state.alive).tolist() == [i != 2 for i in range(4)]
    for leaf in state.adapter.params.values():
        b = np.asarray(leaf["b"])
        assert np.isfinite(np.delete(b, 2, axis=0)).all()  # its ring neighbours never heard it
    records = _strict_records(tmp_path / "drop" / "metrics.jsonl")
    assert all(r["nonfinite_devices"] == 1 and r["dropped_devices"] == 1 for r in records)
    assert all(np.isfinite(r["train_loss"]) for r in records) and np.isfinite(summary["final_accuracy"])


def test_continue_goes_on_and_logs_it(tmp_path, poisoned, capsys):
    summary, _ = run(QUICK | {"on_nonfinite": "continue"}, out=tmp_path / "cont", progress=False)
    assert "non-finite loss or adapter on 1 device" in capsys.readouterr().err
    records = _strict_records(tmp_path / "cont" / "metrics.jsonl")
    assert records[0]["nonfinite_devices"] == 1 and records[-1]["train_loss"] is None  # NaN spread over the ring
    assert summary["status"] == "finished"
    written = json.loads((tmp_path / "cont" / "summary.json").read_text(), parse_constant=_refuse)
    nulls = [v for v in written["b_gram_offdiagonal"].values() if v is None]  # a NaN adapter, layer by layer
    assert nulls and "b_gram_offdiagonal" in written["nonfinite"]


def test_a_second_run_in_a_held_folder_is_refused_with_the_holders_pid(tmp_path):
    holder = RunFolder(tmp_path / "shared")
    holder.claim(resume=False)
    with pytest.raises(UserError, match=rf"another process \(pid {os.getpid()}\) is running in"):
        run(QUICK, out=tmp_path / "shared", progress=False)
    holder.release()
    # a lock file left by a killed process holds no lock: the folder is free
    (tmp_path / "stale").mkdir()
    (tmp_path / "stale" / ".lock").write_text("999999")
    summary, _ = run(QUICK, out=tmp_path / "stale", progress=False)
    assert summary["status"] == "finished"


def test_ctrl_c_saves_the_running_stretch_and_prints_the_command_that_continues(tmp_path, monkeypatch, capsys):
    sent = []

    def sigint_at_round_2(sim):
        def mixing(q):
            if q == 2 and not sent:  # one Ctrl-C, while round 3's stretch is planned
                sent.append(os.kill(os.getpid(), signal.SIGINT))
            return sim.topology.mixing(q)
        return sim._replace(topology=sim.topology._replace(mixing=mixing))

    patch_build(monkeypatch, sigint_at_round_2)
    out = tmp_path / "ctrl-c"
    config = light_yaml(tmp_path)
    code = main(["run", config, "--set", "rounds=6", "--set", "eval_every=1", "--set", "checkpoint_every=0",
                 "--out", str(out), "--no-progress"])
    assert code == 130
    err = capsys.readouterr().err
    assert "interrupted; round 3 of 6 is saved in" in err
    assert f"jaxdfl run {config} --set rounds=6 --set eval_every=1 --set checkpoint_every=0 --out {out} " \
           "--resume --no-progress" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["3"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_failure_after_the_start_marks_the_folder_and_one_before_leaves_nothing(tmp_path, monkeypatch):
    def explode(sim):
        def run_rounds(state, inputs):
            raise RuntimeError("out of memory (simulated)")
        return sim._replace(run_rounds=run_rounds)

    patch_build(monkeypatch, explode)
    with pytest.raises(RuntimeError):
        run(QUICK, out=tmp_path / "failed", progress=False)
    summary = json.loads((tmp_path / "failed" / "summary.json").read_text())
    assert summary == {"status": "failed", "error": "RuntimeError: out of memory (simulated)"}
    with pytest.raises(ConfigError):
        run(QUICK | {"data": {"tasks": ["nope"]}}, out=tmp_path / "never", progress=False)
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("args, says", [
    (["--set", "seed=-1"], "seed: must be >= 0"),
    (["--set", "method.alpha=0"], "method.alpha: must be > 0"),
    (["--set", "model.checkpoint=CONFIG"], "not a readable .safetensors file"),
    (["--out", "FILE"], "is a file; choose a folder"),
    (["--out", "FILE/under"], "which is a file"),
    (["--out", "/proc/jaxdfl-cannot-write-here"], "cannot write there"),
    (["DUPLICATE"], "key 'rounds' appears twice"),
    (["LIST"], "the top level must be a mapping"),
    (["--set", "availability.trace=a\x1eb\u2028c"], r"no file at a\x1eb\u2028c"),  # breaks for str.splitlines
])
def test_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys, args, says):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dup.yaml").write_text("rounds: 2\nseed: 1\nrounds: 3\n")
    (tmp_path / "list.yaml").write_text("- rounds\n- seed\n")
    swap = {"FILE": str(tmp_path / "file"), "FILE/under": str(tmp_path / "file" / "under"),
            "model.checkpoint=CONFIG": f"model.checkpoint={tmp_path / 'dup.yaml'}",
            "DUPLICATE": str(tmp_path / "dup.yaml"), "LIST": str(tmp_path / "list.yaml")}
    argv = ["run", *[swap.get(a, a) for a in args]]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxdfl: error:") and says in err[0], err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, says", [
    (["method.rank=1000"], "method.rank=1000 is above the smaller side of layer head"),
    (["method.name=lori", "method.moe_top_k=500"], "method.moe_top_k=500 keeps every entry"),
    (["data.partition=shards", "data.num_shards=100"], "data.num_shards=100 is not below the 10 labels"),
])
def test_legal_but_surely_mistaken_values_warn_in_one_line(capsys, overrides, says):
    assert main(["run", "--check", *sum((["--set", o] for o in overrides), [])]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("jaxdfl: warning:")]
    assert len(warnings) == 1 and says in warnings[0], warnings


def test_the_run_says_what_it_does_before_the_first_round(tmp_path, capsys):
    assert main(["run", light_yaml(tmp_path), "--set", "eval_every=1", "--out", str(tmp_path / "v"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("jaxdfl: loading the model") and out[1].startswith("jaxdfl: building the data")
    assert out[2].startswith("jaxdfl: compiling the round program")
    assert out[3].startswith("round 1/2: loss") and out[4].startswith("round 2/2: loss")


def test_resume_needs_the_folder_and_list_shows_whole_sentences(capsys):
    assert main(["run", "--resume"]) == 2
    assert capsys.readouterr().err.strip() == \
        "jaxdfl: error: --resume continues the run in a folder: name it with --out DIR"
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line for line in lines if not line.startswith(" ")]
    assert "quickstart" in names and "paper_a/proposed" in names
    descriptions = " ".join(line.strip() for line in lines if line.startswith(" ")).split(". ")
    assert lines[lines.index("quickstart") + 1].strip().startswith("The quick start: 8 simulated phones")
    assert all(line.strip() for line in lines) and descriptions[-1].endswith(".")


def test_strict_replaces_non_finite_numbers_inside_nested_dicts():
    from jaxdfl.sim.run_folder import strict

    record = {"a": 1.0, "per_layer": {"q": float("nan"), "k": 0.5}, "b": float("inf"), "ok": {"x": 2.0}}
    out = strict(record)
    assert out == {"a": 1.0, "per_layer": {"q": None, "k": 0.5}, "b": None, "ok": {"x": 2.0},
                   "nonfinite": ["per_layer", "b"]}
    assert strict({"a": 1.0, "d": {"x": 2.0}}) == {"a": 1.0, "d": {"x": 2.0}}


def test_running_out_of_host_memory_while_building_is_one_line(tmp_path, monkeypatch, capsys):
    """numpy's MemoryError (sized by what was asked, e.g. a billion devices) ends in exit 2 and one line."""
    from jaxdfl import data

    def too_big(*args, **kwargs):
        raise MemoryError("Unable to allocate 29.8 GiB for an array with shape (1000000000, 8) and data type int32")

    monkeypatch.setattr(data, "build", too_big)
    assert main(["run", light_yaml(tmp_path), "--check", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxdfl: error: out of host memory: Unable to allocate 29.8 GiB")
