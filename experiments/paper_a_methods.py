"""Paper A part 1 — every method on the digits multi-task suite with one fixed topology: per-task accuracy,
trainable % and transmitted % per round (the columns of Paper A Table I), and the measured collision.

    python experiments/paper_a_methods.py              # ~6 min on 2 cores; results/paper_a/methods.{csv,md,png}
    python experiments/paper_a_methods.py --rounds 3   # a smoke run

Runs the bundled configs configs/paper_a/{fpft,lora,lori,hard_moe,so_lora_single}.yaml as they are (8
devices, 4 tasks, 2 devices per task, every device averaging with every other one; hard-routing MoE averages
within a task and is scored by an oracle router). The paper's numbers (Qwen2.5-1.5B, Table I) are printed
beside ours, labelled as theirs.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch, run_grid  # noqa: E402

CONFIGS = {"FPFT": "paper_a/fpft", "LoRA": "paper_a/lora", "LoRI": "paper_a/lori",
           "Hard-routing MoE": "paper_a/hard_moe", "Proposed (single)": "paper_a/so_lora_single"}
# Paper A Table I, Qwen2.5-1.5B-Instruct: "# Params (%)", "# Trans. (%)", Avg. accuracy — theirs, not ours.
PAPER = {"FPFT": (100.0, 100.0, 76.95), "LoRA": (2.01, 2.01, 68.03), "LoRI": (1.05, 1.05, 75.17),
         "Hard-routing MoE": (100.0, 100.0, 80.93), "Proposed (single)": (0.54, 0.27, 76.44)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default="results/paper_a")
    args = parser.parse_args()

    clock = Stopwatch()
    out = Path(args.out)
    rows = []
    for label, config in CONFIGS.items():
        summary = run_grid(config, {"run": []}, out / "methods" / Path(config).name, args.rounds)["run"]["summary"]
        rows.append({"method": label, "trainable_params": summary["trainable_params"],
                     "trainable_pct": summary["trainable_pct"], "uplink_pct_per_round": summary["uplink_pct_per_round"],
                     **{f"acc_{t}": a for t, a in summary["per_task_accuracy"].items()},
                     "acc_mean": summary["final_accuracy"], "own_task_accuracy": summary.get("own_task_accuracy", ""),
                     "collision_empirical": summary.get("collision_empirical", ""), "wall_s": summary["wall_s"]})
    tasks = [k.removeprefix("acc_") for k in rows[0] if k.startswith("acc_") and k != "acc_mean"]

    out.mkdir(parents=True, exist_ok=True)
    with open(out / "methods.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    lines = ["| method | trainable % (ours) | sent %/round (ours) | " + " | ".join(tasks)
             + " | mean | collision | paper: params % | paper: trans. % | paper: avg. acc |",
             "|---" * (len(tasks) + 9) + "|"]
    for r in rows:
        p = PAPER[r["method"]]
        coll = f"{r['collision_empirical']:.2f}" if r["collision_empirical"] != "" else "–"
        lines.append(f"| {r['method']} | {r['trainable_pct']:.2f} | {r['uplink_pct_per_round']:.2f} | "
                     + " | ".join(f"{r['acc_' + t]:.3f}" for t in tasks)
                     + f" | **{r['acc_mean']:.3f}** | {coll} | {p[0]} | {p[1]} | {p[2]} |")
    table = "\n".join(lines)
    (out / "methods.md").write_text(table + "\n")
    print(table)

    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(rows)
    x = np.arange(len(tasks) + 1)
    for i, r in enumerate(rows):
        ax.bar(x + i * width, [r["acc_" + t] for t in tasks] + [r["acc_mean"]], width, label=r["method"])
    ax.set_xticks(x + 0.4 - width / 2, tasks + ["mean"])
    ax.set_ylabel("test accuracy")
    ax.set_title("Paper A methods on the digits multi-task suite (8 devices, one cluster)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "methods.png", dpi=120)
    print(f"wrote {out}/methods.csv, methods.md, methods.png in {clock}")


if __name__ == "__main__":
    main()
