"""D1: learning who to talk to. A mixing matrix learned by gradient descent through rollouts, against fixed
topologies with about as many links, each trained from scratch for 30 rounds; 3 seeds.

    python experiments/diff_d1.py                     # writes results/studies/d1.{csv,md,png}
    python experiments/diff_d1.py --seeds 0 --steps 5 # a quick look

Each seed learns its own design (configs/studies/d1.yaml: 16 devices, 4 tasks, nobody told the tasks;
learned over the complete graph with a link-entropy penalty, then each device keeps its 3 heaviest
neighbours), then retrains with it frozen. Baselines, same seeds: ring (2 neighbours), random 3-regular
(redrawn every round), Erdős–Rényi with 3 expected neighbours (redrawn every round), full averaging (15),
and the by_task oracle (the 3 devices of one's own task). Reported: each device's test accuracy on its own
task, the mean over tasks of every device, and the share of each device's mixing weight on same-task devices.
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

import jaxdfl  # noqa: E402
from jaxdfl.diff.learn import design_stats, learn  # noqa: E402

CONFIG = "studies/d1"
BASELINES = {"ring": ["topology.name=ring"], "3-regular": ["topology.name=kregular", "topology.degree=3"],
             "Erdős–Rényi": ["topology.name=erdos_renyi", "topology.edge_prob=0.2"], "full": ["topology.name=full"],
             "by_task (oracle)": ["topology.name=by_task"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="override study.steps")
    parser.add_argument("--out", default="results/studies")
    args = parser.parse_args()
    clock, out = Stopwatch(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = [] if args.steps is None else [f"study.steps={args.steps}"]
    rows = {name: [] for name in ["learned", *BASELINES]}
    learned_curves = []
    for seed in args.seeds:
        folder = out / "d1" / f"learned-seed{seed}"
        if not (folder / "summary.json").exists():
            learn(CONFIG, [f"seed={seed}", f"study.retrain_seeds=[{seed}]", *extra], out=folder, progress=False)
        summary = json.loads((folder / "summary.json").read_text())
        run = json.loads((folder / "retrain" / f"learned-seed{seed}" / "summary.json").read_text())
        rows["learned"].append({"seed": seed, "own": run["own_task_accuracy"], "mean": run["final_accuracy"],
                                **summary["design"]})
        learned_curves.append([json.loads(line) for line in (folder / "learn.jsonl").read_text().splitlines()])
    results = run_grid(CONFIG, {name: list(o) for name, o in BASELINES.items()}, out / "d1" / "baselines",
                       seeds=args.seeds)  # every baseline's seeds as replicas of one program
    for name in BASELINES:
        for res in results[name]["summary"]["replicas"]:
            sim = jaxdfl.build_simulation(jaxdfl.load_config(CONFIG, [*BASELINES[name], f"seed={res['seed']}"]))
            rows[name].append({"seed": res["seed"], "own": res["own_task_accuracy"], "mean": res["final_accuracy"],
                               **design_stats(sim, sim.topology.mixing(0))})

    table = []
    for name, runs in rows.items():
        agg = lambda key: (float(np.mean([r[key] for r in runs])), float(np.std([r[key] for r in runs])))  # noqa
        table.append({"topology": name, "seeds": len(runs),
                      **{f"{k}_{s}": v for k in ("own", "mean", "same_task_weight", "links")
                         for s, v in zip(("mean", "std"), agg(k))}})
    write_rows_csv(out / "d1.csv", table)
    lines = ["| topology | own-task accuracy | mean over tasks | weight on same-task devices | directed links |",
             "|---|---:|---:|---:|---:|"]
    for r in table:
        lines.append(f"| {r['topology']} | {r['own_mean']:.3f} ± {r['own_std']:.3f} | {r['mean_mean']:.3f} ± "
                     f"{r['mean_std']:.3f} | {r['same_task_weight_mean']:.2f} ± {r['same_task_weight_std']:.2f} | "
                     f"{r['links_mean']:.0f} |")
    (out / "d1.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    fig, (ax_curve, ax_bar) = plt.subplots(1, 2, figsize=(11, 4))
    for seed, curve in zip(args.seeds, learned_curves):
        ax_curve.plot([r["step"] for r in curve], [r["validation_accuracy"] for r in curve], label=f"seed {seed}")
    ax_curve.set(xlabel="design step", ylabel="validation accuracy after a 5-round rollout",
                 title="learning the mixing matrix")
    ax_curve.legend(fontsize=8)
    names = [r["topology"] for r in table]
    ax_bar.bar(names, [r["own_mean"] for r in table], yerr=[r["own_std"] for r in table], color="C0", capsize=3)
    ax_bar.set(ylabel="own-task test accuracy after 30 rounds", title=f"retrained, mean ± std over {len(args.seeds)} seeds")
    ax_bar.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out / "d1.png", dpi=110)
    print(f"wrote {out}/d1.csv, d1.md, d1.png in {clock}")


if __name__ == "__main__":
    main()
