"""B3 — Paper B Figs. 4–5 analog: the covariance term ‖Σ p_k B_k A_k − (Σ p_k B_k)(Σ p_k A_k)‖_F (B eq. 12)
and test accuracy against rounds, for label-shard non-IID splits with different numbers of shards per client
(more shards per client = closer to IID), plus an IID reference.

    python experiments/paper_b_b3.py                  # ~6 min on 2 cores; results/paper_b/b3.{csv,png}
    python experiments/paper_b_b3.py --shards 1 2 --rounds 30

Base config: configs/paper_b/b3.yaml (ILoRA, i.e. no communication constraint, r = 8; 100 clients, 10 per
round). The paper varies the shard *size*. Here the pool is cut into 100·s shards and each client is dealt
s of them, so more shards per client means smaller shards but more labels per client.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch, run_grid, write_curves_csv  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default="results/paper_b")
    args = parser.parse_args()

    clock = Stopwatch()
    out = Path(args.out)
    variants = {f"shards_{s}": ["data.partition=shards", f"data.num_shards={s}"] for s in args.shards}
    variants["iid"] = ["data.partition=iid"]
    results = run_grid("paper_b/b3", variants, out / "b3", args.rounds)
    write_curves_csv(out / "b3.csv", results, ["covariance_fro", "accuracy", "train_loss"])

    fig, (ax_cov, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, res) in enumerate(results.items()):
        label = "IID" if name == "iid" else f"{name.split('_')[1]} shard(s) per client"
        recs = res["metrics"]
        ax_cov.plot([r["round"] for r in recs], [r["covariance_fro"] for r in recs], label=label, color=f"C{i}", lw=1)
        evals = [r for r in recs if "accuracy" in r]
        ax_acc.plot([e["round"] for e in evals], [e["accuracy"] for e in evals], marker="o", ms=3, label=label,
                    color=f"C{i}")
    ax_cov.set(xlabel="round", ylabel="covariance term ‖·‖_F (B eq. 12)", yscale="log",
               title="covariance of the sampled clients' LoRA factors")
    ax_acc.set(xlabel="round", ylabel="test accuracy (global model)", ylim=(0, 1), title="accuracy")
    ax_acc.legend(fontsize=8)
    fig.suptitle("B3: non-IID label shards, ILoRA r = 8, 100 clients, 10 per round")
    fig.tight_layout()
    fig.savefig(out / "b3.png", dpi=110)

    print(f"\n{'split':<10} {'mean covariance':>16} {'final accuracy':>15}")
    for name, res in results.items():
        cov = np.mean([r["covariance_fro"] for r in res["metrics"]])
        print(f"{name:<10} {cov:>16.4f} {res['summary']['final_accuracy']:>15.3f}")
    print(f"wrote {out}/b3.csv and {out}/b3.png in {clock}")


if __name__ == "__main__":
    main()
