"""Optional metric writers beside ``metrics.jsonl``: TensorBoard and Weights & Biases, where researchers watch
runs. Each takes the same per-round records the run writes to ``metrics.jsonl``; both are extras
(``pip install "jaxdfl[tensorboard]"`` / ``"jaxdfl[wandb]"``) and off unless asked for (``--log``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

from jaxdfl.errors import UserError

WRITERS = ("tensorboard", "wandb")


class MetricWriter(Protocol):
    def write(self, record: dict) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict) -> dict[str, float]:
    """A record's numbers, nested dicts flattened to ``outer/inner`` (``per_task_accuracy/shift``)."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out |= {f"{key}/{k}": v for k, v in scalars(value).items()}
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "round":
            out[key] = float(value)
    return out


class TensorBoardWriter:
    """Event files under ``<run>/tensorboard`` (``tensorboard --logdir <run>``), one step per round."""

    def __init__(self, out: Path, config: dict):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=str(out / "tensorboard"))
        self._writer.add_text("config", f"```\n{config}\n```", 0)

    def write(self, record: dict) -> None:
        for key, value in scalars(record).items():
            self._writer.add_scalar(key, value, record["round"])

    def close(self) -> None:
        self._writer.close()


class WandbWriter:
    """A Weights & Biases run named after the run folder, project ``jaxdfl`` (``WANDB_PROJECT`` overrides it;
    ``WANDB_MODE=offline`` keeps it on disk under ``<run>/wandb``)."""

    def __init__(self, out: Path, config: dict):
        import wandb

        self._run = wandb.init(project="jaxdfl", name=out.name, dir=str(out), config=config, reinit="create_new")

    def write(self, record: dict) -> None:
        self._run.log(scalars(record), step=record["round"])

    def close(self) -> None:
        self._run.finish()


def make_writers(names, out: Path, config: dict, check_only: bool = False) -> list[MetricWriter]:
    """The writers ``names`` asks for; ``check_only``: only check each is known and installed (before a run
    builds anything)."""
    packages = {"tensorboard": ("tensorboardX", TensorBoardWriter), "wandb": ("wandb", WandbWriter)}
    writers = []
    for name in dict.fromkeys(names):
        if name not in packages:
            raise UserError(f"--log {name}: unknown writer; choose from {', '.join(WRITERS)}")
        package, writer = packages[name]
        if importlib.util.find_spec(package) is None:
            raise UserError(f"--log {name} needs the {package} package: pip install \"jaxdfl[{name}]\"")
        if not check_only:
            writers.append(writer(out, config))
    return writers
