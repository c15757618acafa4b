"""A5 — Paper A on a real LLM: the proposed method and LoRA fine-tuning SmolLM2-135M-Instruct on the four
generated text task families (yes/no reading, arithmetic, code output, commonsense), 8 devices, against the base
model, by multiple-choice log-likelihood and by exact match of generated answers.

    python experiments/paper_a_smollm2.py            # ~20 min on 2 cores; results/paper_a/a5.{csv,md,png}
    python experiments/paper_a_smollm2.py --rounds 2 # a smoke run

Runs the bundled configs configs/paper_a/smollm2_quick.yaml (proposed) and smollm2_quick_lora.yaml as they are
and reports, per task, the accuracy of every device's model (multiple choice), the exact match of generated
answers (one device per task), what each device trains and sends, and the memory one simulated device adds to
the shared frozen base.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch, run_grid, write_rows_csv  # noqa: E402

CONFIGS = {"Proposed": "paper_a/smollm2_quick", "LoRA": "paper_a/smollm2_quick_lora"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="override every config's rounds")
    parser.add_argument("--out", default="results/paper_a")
    args = parser.parse_args()
    clock = Stopwatch()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {label: run_grid(config, {label.lower(): []}, out / "a5", args.rounds)[label.lower()]["summary"]
               for label, config in CONFIGS.items()}

    first = next(iter(results.values()))
    tasks = list(first["per_task_accuracy"])
    rows = [{"model": "Base (SmolLM2-135M-Instruct)",
             **{f"mc_{t}": first["initial_per_task_accuracy"][t] for t in tasks},
             **{f"em_{t}": first["initial_exact_match"][t] for t in tasks}, "trainable_pct": 0.0, "sent_pct": 0.0,
             "energy_j": 0.0, "state_mib_per_device": 0.0, "wall_s": 0.0}]
    for label, s in results.items():
        rows.append({"model": label, **{f"mc_{t}": s["per_task_accuracy"][t] for t in tasks},
                     **{f"em_{t}": s["exact_match"][t] for t in tasks}, "trainable_pct": s["trainable_pct"],
                     "sent_pct": s["uplink_pct_per_round"], "energy_j": s["energy_j_total"],
                     "state_mib_per_device": s["state_bytes_per_device"] / 2**20, "wall_s": s["wall_s"]})
    write_rows_csv(out / "a5.csv", rows)

    lines = ["| model | " + " | ".join(f"{t} MC" for t in tasks) + " | mean MC | " +
             " | ".join(f"{t} EM" for t in tasks) + " | mean EM | trained % | sent %/round | energy J | MiB/device |",
             "|---" * (2 * len(tasks) + 7) + "|"]
    for r in rows:
        mc = [r[f"mc_{t}"] for t in tasks]
        em = [r[f"em_{t}"] for t in tasks]
        lines.append(f"| {r['model']} | " + " | ".join(f"{v:.3f}" for v in mc) + f" | {np.mean(mc):.3f} | "
                     + " | ".join(f"{v:.3f}" for v in em) + f" | {np.mean(em):.3f} | {r['trainable_pct']:.2f} | "
                     f"{r['sent_pct']:.3f} | {r['energy_j']:.3g} | {r['state_mib_per_device']:.1f} |")
    base_mib = first["base_bytes"] / 2**20
    lines.append(f"\nFrozen base: {base_mib:.0f} MiB, stored once and shared by all {first['num_devices']} devices; "
                 f"chance (majority answer): " + ", ".join(f"{t} {first['per_task_chance'][t]:.3f}" for t in tasks))
    (out / "a5.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    width = 0.8 / len(rows)
    for ax, metric, title in ((axes[0], "mc", "multiple-choice accuracy (every device)"),
                              (axes[1], "em", "exact match of generated answers")):
        for j, r in enumerate(rows):
            ax.bar(np.arange(len(tasks)) + j * width, [r[f"{metric}_{t}"] for t in tasks], width, label=r["model"])
        ax.set_xticks(np.arange(len(tasks)) + width * (len(rows) - 1) / 2, tasks)
        ax.set_title(title)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8)
    fig.suptitle("SmolLM2-135M-Instruct, 8 devices, generated tasks (Paper A setting, small budget)")
    fig.tight_layout()
    fig.savefig(out / "a5.png", dpi=120)
    print(f"wrote {out}/a5.csv a5.md a5.png in {clock}")


if __name__ == "__main__":
    main()
