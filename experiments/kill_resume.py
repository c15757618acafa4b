"""Kill a run with SIGKILL at random moments, resume it, and compare every metric with an uninterrupted run.

    python experiments/kill_resume.py              # N = 20 kills; prints the counts (docs/reliability.md)
    python experiments/kill_resume.py --kills 5 --seed 1

The run is small (8 devices, 12 rounds, a program and a checkpoint every round), so that a kill lands in
every phase of it: start-up, compilation, training, evaluation, writing metrics, writing checkpoints. Each
kill is followed by ``--resume`` (again and again if a resume is killed too, half of the time, until the run
finishes); then ``metrics.jsonl`` and ``summary.json`` (wall-clock times left out) must equal the
uninterrupted run's, and the metrics file must be strict JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = ["--set", "rounds=12", "--set", "local_steps=2", "--set", "eval_every=1", "--set", "checkpoint_every=1",
        "--no-progress"]
JAXDFL = [sys.executable, "-m", "jaxdfl.cli", "run", *ARGS]


def _strip(path: Path) -> tuple[list, dict]:
    def refuse(token):
        raise ValueError(token)

    records = [json.loads(line, parse_constant=refuse) for line in (path / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((path / "summary.json").read_text())
    for r in records + [summary]:
        r.pop("wall_s", None)
    return records, summary


def _run(out: Path, resume: bool, kill_after: float | None) -> str:
    """Run (or resume) into ``out``; SIGKILL it after ``kill_after`` seconds. Returns how it ended."""
    proc = subprocess.Popen(JAXDFL + ["--out", str(out)] + (["--resume"] if resume else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        proc.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return "killed"
    if proc.returncode != 0:
        return f"exit {proc.returncode}: {proc.stderr.read().strip()[-300:]}"
    return "finished"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        assert _run(tmp / "reference", False, None) == "finished"
        duration = time.time() - t0
        reference = _strip(tmp / "reference")
        print(f"uninterrupted run: {duration:.0f} s; killing {args.kills} runs at uniform random moments in it")
        counts = {"kills": 0, "kills during a resume": 0, "resumed to the end": 0, "identical to uninterrupted": 0,
                  "mismatched": 0, "failed to resume": 0}
        for i in range(args.kills):
            out = tmp / f"killed{i}"
            at = rng.uniform(0.5, duration)
            ended = _run(out, False, at)
            counts["kills"] += ended == "killed"
            resumes = 0
            while ended == "killed" and resumes < 10:
                resumes += 1
                second = rng.uniform(0.5, duration) if rng.random() < 0.5 else None  # kill the resume too
                ended = _run(out, True, second)
                counts["kills during a resume"] += ended == "killed"
            if ended != "finished":
                counts["failed to resume"] += 1
                print(f"run {i} (killed at {at:.1f} s): {ended}")
                continue
            counts["resumed to the end"] += 1
            same = _strip(out) == reference
            counts["identical to uninterrupted" if same else "mismatched"] += 1
            print(f"run {i}: killed at {at:.1f} s, {resumes} resume(s), {'identical' if same else 'MISMATCH'}",
                  flush=True)
    for name, n in counts.items():
        print(f"{name:<28} {n}")
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
