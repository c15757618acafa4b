"""A run's output folder: claimed by one process at a time, and written so that a crash or a kill anywhere
leaves files a resume (or a person) can read.

  .lock          held (``fcntl.flock``) by the process running in the folder; the OS releases it when that
                 process ends, however it ends, so a stale lock never blocks
  config.yaml    the resolved config
  metrics.jsonl  one strict-JSON object per round (non-finite numbers as null, listed under ``nonfinite``)
  summary.json   final numbers, or ``{"status": "failed" | "diverged", ...}``
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import shutil
from pathlib import Path

import yaml

from jaxdfl.errors import UserError, warn
from jaxdfl.sim.processes import broadcast


def check_writable(out: Path) -> None:
    """Raise :class:`UserError` unless ``out`` is (or can become) a folder this process can write in."""
    for parent in [out, *out.parents]:
        if parent.exists():
            if not parent.is_dir():
                what = "is a file" if parent == out else f"lies under {parent}, which is a file"
                raise UserError(f"--out {out} {what}; choose a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UserError(f"--out {out}: {parent} is not writable")
            return


def strict(record: dict) -> dict:
    """``record`` with every non-finite number (also inside nested dicts, e.g. per layer) replaced by None and
    the top-level keys that held one listed under ``nonfinite`` (``json.dumps(..., allow_nan=False)`` then
    holds)."""
    bad = [k for k, v in record.items() if not _finite(v)]
    if not bad:
        return record
    return {k: (_finite_or_none(v) if k in bad else v) for k, v in record.items()} | {"nonfinite": bad}


def _finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return all(_finite(v) for v in value.values()) if isinstance(value, dict) else True


def _finite_or_none(value):
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    return value if _finite(value) else None


def saved_config(out: Path) -> dict:
    """The config saved in run folder ``out`` as this jaxdfl reads it: keys added since the run started stand
    at their defaults, so an older run still resumes."""
    from jaxdfl.config import load_config

    return load_config(yaml.safe_load((Path(out) / "config.yaml").read_text())).to_dict()


class RunFolder:
    """The output folder of one run, claimed with :meth:`claim` before anything is written in it."""

    def __init__(self, out: Path, primary: bool = True):
        self.out = Path(out)
        check_writable(self.out)
        self.metrics = self.out / "metrics.jsonl"
        self.primary = primary  # only the primary process of a multi-process run writes (the others read)
        self._lock = None
        self._created = False

    def claim(self, resume: bool) -> bool:
        """Create the folder if needed and lock it; refuse a folder another process holds, and (unless
        ``resume``) one that already holds a run. Returns whether the run starts afresh: True unless resuming
        a run that got as far as writing its config (one killed while it was building starts again). In a
        multi-process run process 0 claims and tells the others."""
        fresh = self._claim(resume) if self.primary else None
        return broadcast(fresh)

    def _claim(self, resume: bool) -> bool:
        self._created = not self.out.exists()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.out / ".lock", "a+")
        except OSError as err:
            raise UserError(f"--out {self.out}: cannot write there ({err.strerror})") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            pid = self._lock.read().strip() or "unknown"
            self._lock.close()
            self._lock = None
            raise UserError(f"another process (pid {pid}) is running in {self.out}; wait for it or choose another "
                            "--out") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(str(os.getpid()))
        self._lock.flush()
        if resume:
            if (self.out / "config.yaml").exists():
                return False
            if {p.name for p in self.out.iterdir()} <= {".lock"}:
                return True  # killed before its config was written: nothing to continue, start it again
            self.release(failed=True)
            raise UserError(f"cannot resume: {self.out / 'config.yaml'} does not exist")
        if self.metrics.exists():
            self.release()
            raise UserError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        return True

    def saved_config(self) -> dict:
        return saved_config(self.out)

    def start(self, config: dict) -> None:
        if self.primary:
            (self.out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def read_metrics(self, upto_round: int) -> list[dict]:
        """The records of rounds ≤ ``upto_round`` (later ones belong to work a resume redoes); a last line cut
        short by a kill is dropped with a warning (its round is redone)."""
        if not self.metrics.exists():
            return []
        lines = [line for line in self.metrics.read_text().splitlines() if line.strip()]
        records = []
        for i, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if i < len(lines) - 1:
                    raise UserError(f"{self.metrics}:{i + 1}: not a JSON record; the file is damaged") from None
                warn(f"{self.metrics}: the last line was cut short (a kill while writing); its round is redone")
        return [r for r in records if r["round"] <= upto_round]

    def append_metrics(self):
        """The metrics file opened for appending lines (the primary's; elsewhere a sink)."""
        return self.metrics.open("a") if self.primary else open(os.devnull, "w")

    def rewrite_metrics(self, records: list[dict]) -> None:
        if not self.primary:
            return
        text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
        tmp = self.metrics.with_suffix(".jsonl.part")
        tmp.write_text(text)
        tmp.replace(self.metrics)  # atomic: a kill leaves the old file or the new one

    def write_summary(self, summary: dict) -> None:
        if not self.primary:
            return
        tmp = self.out / "summary.json.part"
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
        tmp.replace(self.out / "summary.json")

    def release(self, failed: bool = False) -> None:
        """Unlock; with ``failed`` and a folder this run created that holds nothing but the lock, remove it."""
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if failed and self._created and {p.name for p in self.out.iterdir()} <= {".lock"}:
            shutil.rmtree(self.out, ignore_errors=True)
