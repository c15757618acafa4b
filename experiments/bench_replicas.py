"""Seeds as replicas of one program against the same seeds run one after another, side by side.

    python experiments/bench_replicas.py                      # writes results/bench_replicas.{csv,md}
    python experiments/bench_replicas.py --replicas 3 --devices 8 64 --rounds 10

For each device count, the same S seeds of the quick-start config (LoRA on the digits tiny ViT, ring) run
(a) as S plain runs, one after another, and (b) as one run with ``replicas: S``; each in a fresh process, so
compile time and peak memory (ru_maxrss) are its own. Reported: wall time end to end (build, compile, rounds,
evaluations), time in rounds alone (the sum of ``wall_s`` of metrics.jsonl: rounds and evaluations), peak
memory, and the largest difference between a replica's final accuracy and its plain run's (vmapping over
replicas batches the matmuls differently, so the two agree up to float rounding, which training can amplify).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_rows_csv


def one_run(overrides: list[str]) -> dict:
    """Run the quick start with ``overrides`` in this process; its summary, seconds in rounds, and peak RSS."""
    import jaxdfl

    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary, _ = jaxdfl.run("quickstart", overrides, out=Path(out) / "run", progress=False)
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    finals = [r["final_accuracy"] for r in summary.get("replicas", [summary])]
    return {"wall_s": wall, "rounds_s": sum(r["wall_s"] for r in records), "finals": finals,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def in_process(overrides: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--one", json.dumps(overrides)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--devices", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(json.loads(args.one))))
        return
    rows = []
    for m in args.devices:
        common = [f"num_devices={m}", f"rounds={args.rounds}", f"eval_every={args.rounds}", "checkpoint_every=0"]
        plain = [in_process(common + [f"seed={s}"]) for s in range(args.replicas)]
        together = in_process(common + [f"replicas={args.replicas}"])
        sequential = {key: sum(p[key] for p in plain) for key in ("wall_s", "rounds_s")}
        rows.append({"devices": m, "replicas": args.replicas, "rounds": args.rounds,
                     "sequential_wall_s": round(sequential["wall_s"], 1),
                     "replicas_wall_s": round(together["wall_s"], 1),
                     "wall_speedup": round(sequential["wall_s"] / together["wall_s"], 2),
                     "sequential_rounds_s": round(sequential["rounds_s"], 1),
                     "replicas_rounds_s": round(together["rounds_s"], 1),
                     "rounds_speedup": round(sequential["rounds_s"] / together["rounds_s"], 2),
                     "sequential_peak_gb": round(max(p["peak_gb"] for p in plain), 2),
                     "replicas_peak_gb": round(together["peak_gb"], 2),
                     "max_final_accuracy_diff": max(abs(a - p["finals"][0])
                                                    for a, p in zip(together["finals"], plain))})
        print(rows[-1], flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    write_rows_csv(out / "bench_replicas.csv", rows)
    lines = ["| devices | S | sequential wall (s) | replicas wall (s) | speed-up | rounds: sequential / replicas (s) | "
             "peak GB: sequential / replicas | max \\|Δ final accuracy\\| |", "|---:|---:|---:|---:|---:|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['devices']} | {r['replicas']} | {r['sequential_wall_s']} | {r['replicas_wall_s']} | "
                     f"{r['wall_speedup']}× | {r['sequential_rounds_s']} / {r['replicas_rounds_s']} "
                     f"({r['rounds_speedup']}×) | {r['sequential_peak_gb']} / {r['replicas_peak_gb']} | "
                     f"{r['max_final_accuracy_diff']:.4f} |")
    (out / "bench_replicas.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
