"""A2 — Paper A Fig. 4 analog: average test accuracy against the number of devices (5…15) for every method of
A1, on the digits multi-task suite over the device-to-device wireless network.

    python experiments/paper_a_a2.py                        # ~11 min on 2 cores; results/paper_a/a2.{csv,png}
    python experiments/paper_a_a2.py --devices 5 10 --rounds 3

Each point is one run of A1's config with ``num_devices`` set (one task per device, tasks dealt round-robin).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch, write_rows_csv  # noqa: E402
from paper_a_a1 import METHODS, run_methods  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[5, 10, 15])
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default="results/paper_a")
    args = parser.parse_args()

    clock = Stopwatch()
    out = Path(args.out)
    rows = []
    for m in args.devices:
        for label, s in run_methods(METHODS, out / "a2" / f"m{m}", args.rounds, [f"num_devices={m}"]).items():
            rows.append({"method": label, "devices": m, "accuracy": s["final_accuracy"],
                         "own_task_accuracy": s.get("own_task_accuracy", ""), "num_clusters": s["num_clusters"],
                         "outages": s["outages_total"], "links": s["links_total"], "wall_s": s["wall_s"]})
    write_rows_csv(out / "a2.csv", rows)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, label in enumerate(METHODS):
        pts = [r for r in rows if r["method"] == label]
        ax.plot([r["devices"] for r in pts], [r["accuracy"] for r in pts], marker="o", label=label, color=f"C{i}")
    ax.set(xlabel="number of devices", ylabel="average test accuracy (every device, every task)", ylim=(0, 1),
           title="A2: accuracy vs number of devices (digits suite, D2D network)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "a2.png", dpi=120)

    print(f"\n{'method':<42}" + "".join(f"{f'M={m}':>8}" for m in args.devices))
    for label in METHODS:
        print(f"{label:<42}" + "".join(f"{r['accuracy']:>8.3f}" for r in rows if r["method"] == label))
    print(f"wrote {out}/a2.csv and {out}/a2.png in {clock}")


if __name__ == "__main__":
    main()
