"""B2 — Paper B Fig. 3c analog: TSFA (rank chosen offline, ratio and bandwidth chosen online) against OSFA
(online only) at fixed ranks r ∈ {1, 2, 4, 16, 32, 64}: accuracy against rounds, and the running
time-average uplink delay against the budget D_th.

    python experiments/paper_b_b2.py                 # ~10 min on 2 cores; results/paper_b/b2.{csv,png}
    python experiments/paper_b_b2.py --rounds 20

Base config: configs/paper_b/b2.yaml (the B1 setup with SOFT, plus control: 10 MHz FDMA uplink, D_th = 50 ms,
V = 1e-5). OSFA keeps the LoRA scale alpha/r = 2 at every rank.
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
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 16, 32, 64])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default="results/paper_b")
    args = parser.parse_args()

    clock = Stopwatch()
    out = Path(args.out)
    variants = {"tsfa": ["control.name=tsfa"]}
    variants |= {f"osfa_r{r}": ["control.name=osfa", f"method.rank={r}", f"method.alpha={2 * r}"] for r in args.ranks}
    results = run_grid("paper_b/b2", variants, out / "b2", args.rounds)
    write_curves_csv(out / "b2.csv", results, ["accuracy", "ratio", "delay_s", "queue", "gamma", "uplink_params"])
    target = results["tsfa"]["summary"]["delay_target_s"]

    fig, (ax_acc, ax_delay) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, res) in enumerate(results.items()):
        rank = res["summary"]["rank"]
        label = f"TSFA (r* = {rank})" if name == "tsfa" else f"OSFA r = {rank}"
        style = dict(color="black", lw=2) if name == "tsfa" else dict(color=f"C{i}", lw=1)
        evals = [r for r in res["metrics"] if "accuracy" in r]
        ax_acc.plot([e["round"] for e in evals], [e["accuracy"] for e in evals], marker="o", ms=3, label=label, **style)
        delays = np.array([r["delay_s"] for r in res["metrics"]])
        ax_delay.plot(np.arange(1, len(delays) + 1), np.cumsum(delays) / np.arange(1, len(delays) + 1), label=label, **style)
    ax_delay.axhline(target, color="red", ls="--", lw=1, label="D_th")
    ax_acc.set(xlabel="round", ylabel="test accuracy (global model)", ylim=(0, 1), title="accuracy")
    ax_delay.set(xlabel="round", ylabel="running time-average delay (s)", yscale="log", title="uplink delay")
    ax_acc.legend(fontsize=8)
    ax_delay.legend(fontsize=7)
    fig.suptitle("B2: TSFA vs OSFA, SOFT with online ratio control, 100 clients, 10 per round")
    fig.tight_layout()
    fig.savefig(out / "b2.png", dpi=110)

    print(f"\n{'variant':<10} {'rank':>4} {'final acc':>9} {'avg delay (s)':>13} {'D_th':>6} {'mean ratio':>10}")
    for name, res in results.items():
        s = res["summary"]
        ratio = np.mean([r["ratio"] for r in res["metrics"]])
        print(f"{name:<10} {s['rank']:>4} {s['final_accuracy']:>9.3f} {s['time_avg_delay_s']:>13.4f} "
              f"{s['delay_target_s']:>6.3f} {ratio:>10.3f}")
    print(f"wrote {out}/b2.csv and {out}/b2.png in {clock}")


if __name__ == "__main__":
    main()
