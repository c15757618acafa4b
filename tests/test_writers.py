"""Metric writers beside metrics.jsonl: what TensorBoard and Weights & Biases receive equals what the run logs."""

import json
import struct
import sys
import types

import pytest

from conftest import LIGHT
from jaxdfl.errors import UserError
from jaxdfl.sim.run import run
from jaxdfl.sim.writers import make_writers, scalars

QUICK = LIGHT | {"checkpoint_every": 0}


def _events(path):
    """Scalar events of a TensorBoard event file: {(tag, step): value} (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    data, at, out = path.read_bytes(), 0, {}
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at:at + 8])
        event = event_pb2.Event.FromString(data[at + 12:at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out[(value.tag, event.step)] = value.simple_value
    return out


def test_tensorboard_receives_every_logged_number(tmp_path):
    pytest.importorskip("tensorboardX", reason="the tensorboard writer is an extra (installed with the test extra)")
    run(QUICK, out=tmp_path / "tb", progress=False, writers=["tensorboard"])
    events = {}
    for path in (tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"):
        events |= _events(path)
    records = [json.loads(line) for line in (tmp_path / "tb" / "metrics.jsonl").read_text().splitlines()]
    expected = {(k, r["round"]): v for r in records for k, v in scalars(r).items()}
    assert ("per_task_accuracy/shift", 2) in expected and ("train_loss", 1) in expected
    assert events.keys() == expected.keys()
    assert all(events[k] == pytest.approx(v, rel=1e-6) for k, v in expected.items())


def test_wandb_receives_every_record_at_its_round(tmp_path, monkeypatch):
    """What the writer hands to wandb (a stand-in module records the calls; no account or network)."""
    calls = []

    class Run:
        def log(self, data, step):
            calls.append((step, data))

        def finish(self):
            calls.append("finish")

    fake = types.SimpleNamespace(init=lambda **kwargs: calls.append(kwargs) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object())
    (writer,) = make_writers(["wandb"], tmp_path / "run", {"seed": 3})
    record = {"round": 4, "train_loss": 0.5, "per_task_accuracy": {"shift": 0.25}, "senders": 8}
    writer.write(record)
    writer.close()
    assert calls[0]["config"] == {"seed": 3} and calls[0]["name"] == "run"
    assert calls[1] == (4, {"train_loss": 0.5, "per_task_accuracy/shift": 0.25, "senders": 8.0})
    assert calls[2] == "finish"


def test_unknown_or_missing_writer_is_a_user_error(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="unknown writer"):
        make_writers(["mlflow"], tmp_path, {})
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(UserError, match=r'pip install "jaxdfl\[wandb\]"'):
        run(QUICK, out=tmp_path / "w", progress=False, writers=["wandb"])
    assert not (tmp_path / "w").exists()  # checked before anything is built or written
