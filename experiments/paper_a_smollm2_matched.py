"""A5 at matched budgets: Paper A's proposed method against LoRA on SmolLM2-135M-Instruct with the same number
of trained entries per device, clusters that are not all singletons, and mean ± std over seeds (issue 14).

    python experiments/paper_a_smollm2_matched.py                 # results/paper_a/a5_matched.{csv,md,png}
    python experiments/paper_a_smollm2_matched.py --rounds 1 --seeds 0   # a smoke run

Runs configs/paper_a/smollm2_matched.yaml (proposed: r = 16, Q = 12.5% of B) and smollm2_matched_lora.yaml (LoRA:
r = 1): on SmolLM2's maps the two train the same number of entries to within a few percent (docs/RESULTS.md).
Seeds run as replicas of one program. For the proposed method the table also gives each device's own adapter
alone, oracle routing and the routing diagnostic, beside the mixture the paper infers with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch, run_grid, write_rows_csv

CONFIGS = {"Proposed": "paper_a/smollm2_matched", "LoRA": "paper_a/smollm2_matched_lora"}


def pm(summary: dict, key: str) -> str:
    if key not in summary:
        return "–"
    return f"{summary[key]:.3f} ± {summary.get('std', {}).get(key, 0.0):.3f}"


def mean_em(summary: dict, key: str = "exact_match") -> tuple[float, float]:
    """Mean exact match over tasks: mean and std over seeds."""
    per_seed = [np.mean(list(rep[key].values())) for rep in summary.get("replicas", [summary])]
    return float(np.mean(per_seed)), float(np.std(per_seed))


def per_seed(summary: dict, key: str, task: str | None = None) -> np.ndarray:
    """``key`` (of ``task``, for per-task dicts) in each seed's summary; empty where the summary lacks it."""
    reps = summary.get("replicas", [summary])
    return np.array([rep[key] if task is None else rep[key][task] for rep in reps if key in rep])


def task_table(results: dict, base: dict) -> str:
    """Per-task multiple-choice accuracy (the mixture) and exact match, mean ± std over seeds."""
    tasks = list(base["initial_per_task_accuracy"])
    lines = ["| model | " + " | ".join(f"{t} MC" for t in tasks) + " | " + " | ".join(f"{t} EM" for t in tasks) + " |",
             "|---|" + "---:|" * (2 * len(tasks)),
             "| Base | " + " | ".join(f"{base['initial_per_task_accuracy'][t]:.3f}" for t in tasks) + " | "
             + " | ".join(f"{base['initial_exact_match'][t]:.3f}" for t in tasks) + " |"]
    for label, s in results.items():
        cells = [per_seed(s, key, t) for key in ("per_task_accuracy", "exact_match") for t in tasks]
        lines.append(f"| {label} | " + " | ".join(f"{c.mean():.3f} ± {c.std():.3f}" for c in cells) + " |")
    return "\n".join(lines)


def plot(results: dict, base: dict, path: Path) -> None:
    """Left: the three accuracies per method; right: each task's MC accuracy; bars are means, whiskers stds."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    keys = [("final_accuracy", "as inferred (Proposed: the mixture)"), ("accuracy_own_adapter", "own adapter alone"),
            ("accuracy_oracle_routing", "oracle routing")]
    width = 0.8 / len(keys)
    for m, s in enumerate(results.values()):  # a group of bars per method, only the accuracies it has
        present = [(i, per_seed(s, key)) for i, (key, _) in enumerate(keys) if per_seed(s, key).size]
        for j, (i, v) in enumerate(present):
            left.bar(m + (j - (len(present) - 1) / 2) * width, v.mean(), width, yerr=v.std(), capsize=3,
                     color=f"C{i}", label=keys[i][1] if m == 0 else None)
    left.axhline(base["initial_accuracy"], color="k", ls=":", lw=1, label="base model")
    left.set_xticks(range(len(results)), list(results))
    left.set(ylabel="mean MC accuracy", ylim=(0, 1), title="matched budgets: three accuracies")
    left.legend(fontsize=8)
    tasks = list(base["initial_per_task_accuracy"])
    x = np.arange(len(tasks))
    width = 0.8 / (len(results) + 1)
    right.bar(x, [base["initial_per_task_accuracy"][t] for t in tasks], width, color="0.7", label="base")
    for i, (label, s) in enumerate(results.items(), start=1):
        values = [per_seed(s, "per_task_accuracy", t) for t in tasks]
        right.bar(x + i * width, [v.mean() for v in values], width, yerr=[v.std() for v in values], capsize=3,
                  label=label)
    right.set_xticks(x + width * len(results) / 2, tasks)
    right.set(ylabel="MC accuracy (as inferred)", ylim=(0, 1), title="per task (mean ± std over seeds)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="override every config's rounds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="results/paper_a")
    parser.add_argument("--device-chunk", type=int, default=2,
                        help="devices trained at a time per seed (2: about 12 GB for 3 seeds; 4 ran out of 24 GB)")
    args = parser.parse_args()
    clock = Stopwatch()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # a checkpoint every round: a round of 3 seeds costs ~11 min on 2 cores, and an interrupted run resumes (run_grid)
    chunk = [f"device_chunk={args.device_chunk}", "checkpoint_every=1"]
    runs = {label: run_grid(config, {label.lower(): chunk}, out / "a5_matched", args.rounds,
                            seeds=args.seeds)[label.lower()] for label, config in CONFIGS.items()}
    results = {label: run["summary"] for label, run in runs.items()}
    # summary.json's wall_s covers only the last invocation of a resumed run; the rounds' own times add up
    rounds_s = {label: sum(r["wall_s"] for r in run["metrics"]) for label, run in runs.items()}

    first = next(iter(results.values()))
    base_em = np.mean(list(first["initial_exact_match"].values()))
    lines = ["| model | mean MC | mean EM | own adapter MC | oracle routing MC | top-k from own task / blind | "
             "trained entries / device | trained % | sent %/round | clusters | rounds s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| Base (SmolLM2-135M-Instruct) | {first['initial_accuracy']:.3f} | {base_em:.3f} |" + " – |" * 8]
    rows = []
    for label, s in results.items():
        em, em_std = mean_em(s)
        share = (f"{s['routing_share_mean']:.2f} / {s['routing_share_blind']:.2f}" if "routing_share_mean" in s
                 else "–")
        lines.append(f"| {label} | {pm(s, 'final_accuracy')} | {em:.3f} ± {em_std:.3f} | "
                     f"{pm(s, 'accuracy_own_adapter')} | {pm(s, 'accuracy_oracle_routing')} | {share} | "
                     f"{s['trainable_params']:.0f} | {s['trainable_pct']:.3f} | {s['uplink_pct_per_round']:.3f} | "
                     f"{s.get('num_clusters', '–')} | {rounds_s[label]:.0f} |")
        rows.append({"model": label, "mc": s["final_accuracy"], "mc_std": s["std"]["final_accuracy"], "em": em,
                     "em_std": em_std, **{f"mc_{t}": a for t, a in s["per_task_accuracy"].items()},
                     "trainable_params": s["trainable_params"], "rounds_s": rounds_s[label]})
    lines += ["", task_table(results, first)]
    write_rows_csv(out / "a5_matched.csv", rows)
    (out / "a5_matched.md").write_text("\n".join(lines) + "\n")
    plot(results, first, out / "a5_matched.png")
    print("\n".join(lines))
    print(f"wrote {out}/a5_matched.csv, a5_matched.md, a5_matched.png in {clock}")


if __name__ == "__main__":
    main()
