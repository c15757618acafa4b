"""D2 (power under an energy budget) and D3 (placement): a design learned through rollouts of the expected
channel, then judged by full runs from scratch on the sampled channel (fading, minimum powers, outages),
beside the config's own design; 3 seeds.

    python experiments/diff_wireless.py d2    # writes results/studies/d2.{csv,md,png}
    python experiments/diff_wireless.py d3

D2 (configs/studies/d2.yaml) learns each device's transmit power under a price per joule; the runs use each
device's learned power as its budget (the least power that meets the delay bound, A(25), up to it), against
every device at the full budget p_max and every device at the mean learned power (the same total budget).
D3 (configs/studies/d3.yaml) learns where the devices stand; the runs place them there, against the drawn
positions. Reported: own-task test accuracy, outages and energy over the run, and the design.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch, run_grid, write_rows_csv  # noqa: E402

from jaxdfl.diff.learn import learn  # noqa: E402


def _row(name, seed, summary):
    return {"design": name, "seed": seed, "own": summary["own_task_accuracy"], "mean": summary["final_accuracy"],
            "outages": summary["outages_total"], "links": summary["links_total"], "energy_j": summary["energy_j_total"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=["d2", "d3"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override study.steps")
    parser.add_argument("--out", default="results/studies")
    args = parser.parse_args()
    clock, out, config = Stopwatch(), Path(args.out), f"studies/{args.study}"
    out.mkdir(parents=True, exist_ok=True)
    extra = [] if args.steps is None else [f"study.steps={args.steps}"]
    rows, designs, curves = [], [], []
    for seed in args.seeds:
        folder = out / args.study / f"learned-seed{seed}"
        if not (folder / "summary.json").exists():
            learn(config, [f"seed={seed}", f"study.retrain_seeds=[{seed}]", *extra], out=folder, progress=False)
        for name in ("learned", "config"):
            summary = json.loads((folder / "retrain" / f"{name}-seed{seed}" / "summary.json").read_text())
            rows.append(_row("learned" if name == "learned" else "config (p_max)" if args.study == "d2"
                             else "config (drawn positions)", seed, summary))
        design = dict(np.load(folder / "design.npz"))
        designs.append(design)
        curves.append([json.loads(line) for line in (folder / "learn.jsonl").read_text().splitlines()])
        if args.study == "d2":  # the same total budget, spread evenly
            mean_power = float(design["power"].mean())
            run = run_grid(config, {f"uniform-seed{seed}": [f"network.power_max={mean_power}", f"seed={seed}"]},
                           out / args.study / "baselines")
            rows.append(_row("uniform at the mean learned power", seed, run[f"uniform-seed{seed}"]["summary"]))
    write_rows_csv(out / f"{args.study}.csv", rows)
    names = list(dict.fromkeys(r["design"] for r in rows))
    lines = ["| design | own-task accuracy | outages / links | energy (J) |", "|---|---:|---:|---:|"]
    for name in names:
        runs = [r for r in rows if r["design"] == name]
        m = lambda k: (np.mean([r[k] for r in runs]), np.std([r[k] for r in runs]))  # noqa: E731
        lines.append(f"| {name} | {m('own')[0]:.3f} ± {m('own')[1]:.3f} | {m('outages')[0]:.0f} ± "
                     f"{m('outages')[1]:.0f} / {m('links')[0]:.0f} | {m('energy_j')[0]:.3f} ± {m('energy_j')[1]:.3f} |")
    (out / f"{args.study}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    fig, (ax_curve, ax_design) = plt.subplots(1, 2, figsize=(11, 4))
    for seed, curve in zip(args.seeds, curves):
        ax_curve.plot([r["step"] for r in curve], [r["objective"] for r in curve], label=f"seed {seed}")
    ax_curve.set(xlabel="design step", ylabel="objective", title=f"{args.study}: objective through rollouts")
    ax_curve.legend(fontsize=8)
    if args.study == "d2":
        for seed, d in zip(args.seeds, designs):
            ax_design.plot(np.sort(d["power"]) * 1e3, marker="o", label=f"seed {seed}")
        ax_design.set(xlabel="device (sorted)", ylabel="learned power (mW)", title="learned transmit powers")
    else:
        d = designs[0]
        ax_design.scatter(*d["positions"].T, c="C3", label="learned")
        ax_design.set(aspect="equal", title="learned positions (seed 0)")
    ax_design.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / f"{args.study}.png", dpi=110)
    print(f"wrote {out}/{args.study}.csv, .md, .png in {clock}")


if __name__ == "__main__":
    main()
