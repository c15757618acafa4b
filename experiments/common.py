"""Shared by the experiment scripts: run a grid of configs through ``jaxdfl.run`` and collect their curves; time
a simulation's rounds; run a benchmark case in a process of its own."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

import jaxdfl
from jaxdfl.sim.run_folder import saved_config


def run_grid(config: str, variants: dict[str, list[str]], out_dir: Path, rounds: int | None = None,
             seeds: list[int] | None = None) -> dict[str, dict]:
    """Run ``config`` once per variant (name → overrides) into ``out_dir/name``; reuse finished runs and resume
    interrupted ones from their newest checkpoint (a run dir whose config differs starts over).

    ``seeds`` (consecutive): every variant runs them all in one program (``replicas``); its summary then holds
    each seed's numbers under ``"replicas"`` and their mean and ``"std"`` at the top.

    Returns name → ``{"summary": ..., "metrics": [...]}``.
    """
    if seeds is not None and list(seeds) != list(range(seeds[0], seeds[0] + len(seeds))):
        raise SystemExit(f"--seeds must be consecutive (they run as replicas of one program), got {seeds}")
    replicas = [] if seeds is None else [f"seed={seeds[0]}", f"replicas={len(seeds)}"]
    results = {}
    for name, overrides in tqdm(variants.items(), desc=f"{config} runs", unit="run"):
        overrides = list(overrides) + ([f"rounds={rounds}"] if rounds else []) + replicas
        run_dir = out_dir / name
        wanted = jaxdfl.load_config(config, overrides).to_dict()
        same = _saved_config(run_dir) == wanted
        summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
        if summary.get("status") != "finished" or not same:
            resumable = same and any((run_dir / "checkpoints").glob("[0-9]*"))
            if run_dir.exists() and not resumable:
                shutil.rmtree(run_dir)
            summary, _ = jaxdfl.run(config, overrides, out=run_dir, progress=False, resume=resumable)
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        results[name] = {"summary": summary, "metrics": metrics}
    return results


def _saved_config(run_dir: Path) -> dict | None:
    """The config a run folder holds, with keys jaxdfl gained since at their defaults (None: none readable)."""
    try:
        return saved_config(run_dir)
    except (OSError, jaxdfl.errors.UserError, yaml.YAMLError):
        return None


def time_rounds(sim, state, rounds: int) -> tuple[float, float]:
    """Seconds of the first round (compiling the round program, then running it) and the median of the next
    ``rounds``, each run as the simulation's own program (which donates ``state``) and waited for."""
    import jax

    t = time.perf_counter()
    state, _ = sim.run_rounds(state, sim.inputs(0, 1))
    jax.block_until_ready(state)
    first_s = time.perf_counter() - t
    times = []
    for r in range(1, rounds + 1):
        inputs = sim.inputs(r, r + 1)
        t = time.perf_counter()
        state, metrics = sim.run_rounds(state, inputs)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - t)
    return first_s, sorted(times)[len(times) // 2]


def case_in_fresh_process(script: str, args: list[str]) -> tuple[dict | None, str]:
    """``python script *args`` in a new process (so its peak memory is its own), whose last stdout line is one
    JSON row: ``(row, "")``, or ``(None, the end of its stderr)`` when it failed (out of memory, above all)."""
    done = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if done.returncode:
        return None, done.stderr.strip()[-2000:] or f"exit {done.returncode}"
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def write_rows_csv(path: Path, rows: list[dict]) -> None:
    """One CSV row per dict, columns from every row's keys in order of appearance (blank where a row has none)."""
    fields = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def write_curves_csv(path: Path, results: dict[str, dict], fields: list[str]) -> None:
    """One row per (variant, round) with the given metric fields (blank where a round lacks one)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "round", *fields])
        for name, res in results.items():
            for rec in res["metrics"]:
                writer.writerow([name, rec["round"], *[rec.get(k, "") for k in fields]])


class Stopwatch:
    def __init__(self):
        self.start = time.time()

    def __str__(self):
        return f"{time.time() - self.start:.0f} s"
