"""A3 — Paper A Fig. 6 analog: the parameter collision rate against the number of devices for LoRA, LoRI and
the proposed method (AGNES clusters under S_max), over the device-to-device network.

    python experiments/paper_a_a3.py                  # ~5 min on 2 cores; results/paper_a/a3.{csv,png}
    python experiments/paper_a_a3.py --devices 5 9 --rounds 2

Collision is measured every round over each device's aggregation set (the devices whose messages it mixes,
itself included): ``collision_analytic`` is A(19) from the devices' mask densities, ``collision_empirical``
the share of positions two or more of those masks actually hold. Both are averaged over devices and rounds.
Masks are fixed after the first round, so a few rounds per run suffice (default 5).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch, write_rows_csv  # noqa: E402
from paper_a_a1 import METHODS, run_methods  # noqa: E402

COMPARED = ("LoRA", "LoRI", "Proposed")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[5, 7, 9, 11, 13, 15])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default="results/paper_a")
    args = parser.parse_args()

    clock = Stopwatch()
    out = Path(args.out)
    methods = {label: METHODS[label] for label in COMPARED}
    rows = []
    for m in args.devices:
        overrides = [f"num_devices={m}", f"eval_every={args.rounds}"]
        for label, s in run_methods(methods, out / "a3" / f"m{m}", args.rounds, overrides).items():
            recs = s["metrics"]
            rows.append({"method": label, "devices": m,
                         "collision_analytic": float(np.mean([r["collision_analytic"] for r in recs])),
                         "collision_empirical": float(np.mean([r["collision_empirical"] for r in recs])),
                         "num_clusters": s["num_clusters"]})
    write_rows_csv(out / "a3.csv", rows)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, label in enumerate(COMPARED):
        pts = [r for r in rows if r["method"] == label]
        ax.plot([r["devices"] for r in pts], [r["collision_analytic"] for r in pts], marker="o", color=f"C{i}",
                label=f"{label}: A(19)")
        ax.plot([r["devices"] for r in pts], [r["collision_empirical"] for r in pts], ls="--", marker="x",
                color=f"C{i}", label=f"{label}: measured")
    ax.set(xlabel="number of devices", ylabel="parameter collision rate", ylim=(-0.02, 1.02),
           title="A3: collision rate vs number of devices (D2D network)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "a3.png", dpi=120)

    print(f"\n{'method':<10}" + "".join(f"{f'M={m}':>14}" for m in args.devices) + "   (A(19) / measured)")
    for label in COMPARED:
        print(f"{label:<10}" + "".join(f"{r['collision_analytic']:>7.3f}/{r['collision_empirical']:.3f}"
                                       for r in rows if r["method"] == label))
    print(f"wrote {out}/a3.csv and {out}/a3.png in {clock}")


if __name__ == "__main__":
    main()
