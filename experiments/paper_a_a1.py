"""A1 — Paper A Table I analog: per-task accuracy, trainable % and transmitted % per round for FPFT, LoRA, LoRI,
hard-routing MoE, the proposed method in one cluster and the proposed method in AGNES clusters, on the digits
multi-task suite over the device-to-device wireless network.

    python experiments/paper_a_a1.py               # ~8 min on 2 cores; results/paper_a/a1.{csv,md,png}
    python experiments/paper_a_a1.py --rounds 3    # a smoke run

Runs the bundled configs configs/paper_a/{fpft,lora,lori,hard_moe,so_lora_single,proposed}.yaml as they are
(10 devices, 4 tasks, one task per device; random graphs for the baselines, by-task averaging for the
hard-routing MoE, one cluster or AGNES clusters for the proposed method; Rayleigh fading, minimum power and
outages on every link), plus three rows of ours (see EXTRA below). Paper A's Table I numbers (Qwen2.5-1.5B)
are printed beside ours, labelled as theirs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch, run_grid, write_rows_csv  # noqa: E402

# label → (bundled config, extra overrides): the paper's six methods ...
METHODS = {
    "FPFT": ("paper_a/fpft", []),
    "LoRA": ("paper_a/lora", []),
    "LoRI": ("paper_a/lori", []),
    "Hard-routing MoE": ("paper_a/hard_moe", []),
    "Proposed (single)": ("paper_a/so_lora_single", []),
    "Proposed": ("paper_a/proposed", []),
}
# ... and ours: the proposed adapters trained alone with no exchange at all (what each device's expert knows
# by itself), and the proposed method trained through its mixture of experts (method.train_with_experts)
THROUGH_EXPERTS = ["method.train_with_experts=true", "optimizer.learning_rate=0.001"]
EXTRA = {
    "Local only (no exchange)": ("paper_a/so_lora_single", ["topology.name=isolated"]),
    "Proposed (single), trained through experts": ("paper_a/so_lora_single", THROUGH_EXPERTS),
    "Proposed, trained through experts": ("paper_a/proposed", THROUGH_EXPERTS),
}
# Paper A Table I, Qwen2.5-1.5B-Instruct: "# Params (%)", "# Trans. (%)", Avg. accuracy — theirs, not ours.
PAPER = {"FPFT": (100.0, 100.0, 76.95), "LoRA": (2.01, 2.01, 68.03), "LoRI": (1.05, 1.05, 75.17),
         "Hard-routing MoE": (100.0, 100.0, 80.93), "Proposed (single)": (0.54, 0.27, 76.44),
         "Proposed": (0.54, 0.27, 78.00)}


def run_methods(methods: dict, out: Path, rounds: int | None, overrides: list[str] = ()) -> dict[str, dict]:
    """Run each method's config (with ``overrides`` on top) into ``out/<slug>``; label → summary."""
    summaries = {}
    for label, (config, extra) in methods.items():
        slug = label.lower().replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        res = run_grid(config, {slug: list(extra) + list(overrides)}, out, rounds)[slug]
        summaries[label] = res["summary"] | {"metrics": res["metrics"]}
    return summaries


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default="results/paper_a")
    args = parser.parse_args()

    clock = Stopwatch()
    out = Path(args.out)
    summaries = run_methods(METHODS | EXTRA, out / "a1", args.rounds)
    rows = []
    for label, s in summaries.items():
        rows.append({"method": label, "trainable_params": s["trainable_params"], "trainable_pct": s["trainable_pct"],
                     "uplink_pct_per_round": s["uplink_pct_per_round"],
                     **{f"acc_{t}": a for t, a in s["per_task_accuracy"].items()},
                     "acc_mean": s["final_accuracy"], "own_task_accuracy": s.get("own_task_accuracy", ""),
                     "collision_empirical": np.mean([r["collision_empirical"] for r in s["metrics"]]),
                     "collision_analytic": np.mean([r["collision_analytic"] for r in s["metrics"]]),
                     "num_clusters": s["num_clusters"], "outages": s["outages_total"], "links": s["links_total"],
                     "energy_j": s["energy_j_total"], "wall_s": s["wall_s"]})
    tasks = [k.removeprefix("acc_") for k in rows[0] if k.startswith("acc_") and k != "acc_mean"]

    out.mkdir(parents=True, exist_ok=True)
    write_rows_csv(out / "a1.csv", rows)

    lines = ["| method | trainable % | sent %/round | " + " | ".join(tasks) + " | mean | own task | collision | "
             "outages / links | energy (J) | paper: params % | paper: trans. % | paper: avg. acc |",
             "|---" + "|---:" * (len(tasks) + 10) + "|"]
    for r in rows:
        p = PAPER.get(r["method"], ("–", "–", "–"))
        lines.append(f"| {r['method']} | {r['trainable_pct']:.2f} | {r['uplink_pct_per_round']:.2f} | "
                     + " | ".join(f"{r['acc_' + t]:.3f}" for t in tasks)
                     + f" | **{r['acc_mean']:.3f}** | {r['own_task_accuracy']:.3f} | {r['collision_analytic']:.3f} | "
                     f"{r['outages']:.0f} / {r['links']:.0f} | {r['energy_j']:.2f} | {p[0]} | {p[1]} | {p[2]} |")
    table = "\n".join(lines)
    (out / "a1.md").write_text(table + "\n")
    print(table)

    fig, ax = plt.subplots(figsize=(11, 5.2))
    width = 0.85 / len(rows)
    x = np.arange(len(tasks) + 2)
    for i, r in enumerate(rows):
        ax.bar(x + i * width, [r["acc_" + t] for t in tasks] + [r["acc_mean"], r["own_task_accuracy"]], width,
               label=r["method"])
    chance = np.mean(list(summaries["LoRA"]["per_task_chance"].values()))
    ax.axhline(chance, color="k", ls=":", lw=1, label="chance (majority class)")
    ax.set_xticks(x + 0.425 - width / 2, tasks + ["mean", "own task"])
    ax.set(ylabel="test accuracy", ylim=(0, 1),
           title="A1: Paper A's methods on the digits multi-task suite, 10 devices on the D2D network")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(out / "a1.png", dpi=120)
    print(f"wrote {out}/a1.csv, a1.md, a1.png in {clock}")


if __name__ == "__main__":
    main()
