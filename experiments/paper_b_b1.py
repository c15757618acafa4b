"""B1 — Paper B Fig. 3a/b analog: test accuracy against rounds for SOFT, TLoRA, RLoRA, SLoRA and ILoRA,
at LoRA rank r = 4 and r = 8, sparsification ratio O = 0.5, error feedback on.

    python experiments/paper_b_b1.py                  # ~10 min on 2 cores; results/paper_b/b1.{csv,png}
    python experiments/paper_b_b1.py --rounds 20      # a quicker look
    python experiments/paper_b_b1.py --no-error-feedback
    python experiments/paper_b_b1.py --no-error-feedback --ranks 16 --ratio 0.1 --seeds 0 1 2   # issue 14's rerun

Base config: configs/paper_b/b1.yaml (100 clients, 10 sampled per round, unbiased aggregation of deltas).
SOFT uses its orthogonality regulariser (ζ = 0.01); the baselines train plain LoRA (ζ = 0), as in the paper.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch, run_grid, write_curves_csv  # noqa: E402

METHODS = ("soft", "tlora", "rlora", "slora", "ilora")
LABELS = {"soft": "SOFT", "tlora": "TLoRA", "rlora": "RLoRA", "slora": "SLoRA", "ilora": "ILoRA"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=None, help="override the config's rounds")
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--no-error-feedback", action="store_true")
    parser.add_argument("--ratio", type=float, default=0.5, help="sparsification ratio O")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="consecutive seeds, run as replicas: mean ± std (and B's column orthogonality)")
    parser.add_argument("--out", default="results/paper_b")
    args = parser.parse_args()

    clock = Stopwatch()
    ef = "false" if args.no_error_feedback else "true"
    tag = "b1" + ("_no_ef" if args.no_error_feedback else "") + (f"_o{args.ratio:g}" if args.ratio != 0.5 else "")
    tag += "_seeds" if args.seeds else ""
    out = Path(args.out)
    variants = {f"{m}_r{r}": [f"method.name={m}", f"method.rank={r}", f"method.alpha={2 * r}",
                               f"method.error_feedback={ef}", f"method.zeta={0.01 if m == 'soft' else 0.0}"]
                + ([] if m == "ilora" else [f"method.ratio={args.ratio}"])
                for r in args.ranks for m in METHODS}
    results = run_grid("paper_b/b1", variants, out / tag, args.rounds, seeds=args.seeds)
    write_curves_csv(out / f"{tag}.csv", results, ["accuracy", "train_loss", "uplink_params", "covariance_fro"])

    fig, axes = plt.subplots(1, len(args.ranks), figsize=(5.5 * len(args.ranks), 4), squeeze=False)
    for ax, r in zip(axes[0], args.ranks):
        for i, m in enumerate(METHODS):
            evals = [rec for rec in results[f"{m}_r{r}"]["metrics"] if "accuracy" in rec]
            ax.plot([e["round"] for e in evals], [e["accuracy"] for e in evals], marker="o", ms=3,
                    label=LABELS[m], color=f"C{i}", ls="--" if m == "ilora" else "-")
        ax.set(title=f"r = {r}, O = {args.ratio:g}, error feedback {'off' if args.no_error_feedback else 'on'}",
               xlabel="round", ylabel="test accuracy (global model)", ylim=(0, 1))
        ax.legend(fontsize=8)
    fig.suptitle("B1: sparsified federated LoRA, 100 clients, 10 per round (digits, 4 tasks pooled)")
    fig.tight_layout()
    fig.savefig(out / f"{tag}.png", dpi=110)

    print(f"\n{'method':<8}" + "".join(f"{'r=' + str(r) + ' acc':>10} {'sent/round':>11}" for r in args.ranks))
    for m in METHODS:
        row = f"{LABELS[m]:<8}"
        for r in args.ranks:
            res = results[f"{m}_r{r}"]
            per_round = res["summary"]["uplink_params_total"] / res["summary"]["rounds"]
            row += f"{res['summary']['final_accuracy']:>10.3f} {per_round:>11.0f}"
        print(row)
    if args.seeds:
        table = seeds_table(results, args.ranks)
        (out / f"{tag}.md").write_text(table + "\n")
        print(table)
    print(f"wrote {out / tag}.csv and {out / tag}.png in {clock}")


def seeds_table(results: dict, ranks: list[int]) -> str:
    """Mean ± std over seeds of the final accuracy and of the mean of the last three evaluations, and how far
    from orthogonal the global model's B columns are (‖BᵀB − diag‖/‖BᵀB‖: median and max over layers)."""
    lines = ["| method | rank | final | last 3 | ‖BᵀB − diag‖/‖BᵀB‖ median (max) over layers |",
             "|---|---:|---:|---:|---:|"]
    for r in ranks:
        for m in METHODS:
            res = results[f"{m}_r{r}"]
            s = res["summary"]
            evals = [rec for rec in res["metrics"] if "accuracy" in rec][-3:]
            last3 = np.mean([[rep["accuracy"] for rep in rec["replicas"]] for rec in evals], axis=0)
            gram = np.array([list(rep["b_gram_offdiagonal"].values()) for rep in s["replicas"]])  # [seeds, layers]
            lines.append(f"| {LABELS[m]} | {r} | {s['final_accuracy']:.3f} ± {s['std']['final_accuracy']:.3f} | "
                         f"{last3.mean():.3f} ± {last3.std():.3f} | {np.median(gram):.3f} ({gram.max():.3f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
