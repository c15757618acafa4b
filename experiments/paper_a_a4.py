"""A4 — Paper A Fig. 5 analog: spectral entropy (A(20)–(21)) and the allocated density (A(22), with min) of every
adapted layer, for two tasks, with LoRI's uniform density for reference.

    python experiments/paper_a_a4.py                      # ~10 s on 2 cores; results/paper_a/a4.{csv,png}
    python experiments/paper_a_a4.py --tasks shift mirror

Builds the proposed method's simulation (configs/paper_a/proposed.yaml) and reads what each device computed at
init from the frozen base model on its own data: ℋ per layer and the densities s allocated from it under the
budget Q = density · Σ d·r. No training is run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from common import Stopwatch  # noqa: E402

import jaxdfl  # noqa: E402
from jaxdfl.core import layer_density  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs=2, default=["rot90", "invert"])
    parser.add_argument("--out", default="results/paper_a")
    args = parser.parse_args()

    clock = Stopwatch()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = jaxdfl.load_config("paper_a/proposed", ["topology.name=full", "network.name=none"])
    sim = jaxdfl.build_simulation(cfg)
    state = sim.init_fn(jax.random.key(cfg.seed))
    entropy = np.asarray(state.adapter.frozen.entropy)  # [devices, layers]
    density = jax.vmap(lambda a: layer_density(sim.method, a))(state.adapter)
    density = np.stack([np.asarray(d) for d in density.values()], axis=1)  # [devices, layers]
    layers = list(sim.layers)
    names = list(sim.data.task_names)
    device_of = {t: int(np.flatnonzero(sim.data.task_of_device == names.index(t))[0]) for t in args.tasks}
    lori = jaxdfl.load_config("paper_a/lori").method.density

    with open(out / "a4.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layer", *[f"entropy_{t}" for t in args.tasks], *[f"density_{t}" for t in args.tasks],
                         "density_lori"])
        for i, layer in enumerate(layers):
            writer.writerow([layer, *[entropy[device_of[t], i] for t in args.tasks],
                             *[density[device_of[t], i] for t in args.tasks], lori])

    fig, (ax_h, ax_s) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    x = np.arange(len(layers))
    for j, t in enumerate(args.tasks):
        ax_h.plot(x, entropy[device_of[t]], marker="o", color=f"C{j}", label=t)
        ax_s.bar(x + (j - 0.5) * 0.4, density[device_of[t]], 0.4, color=f"C{j}", label=f"proposed, {t}")
    ax_s.axhline(lori, color="k", ls="--", lw=1, label="LoRI (uniform)")
    ax_h.set(ylabel="spectral entropy ℋ", title="A4: spectral entropy and allocated density per layer")
    ax_s.set(ylabel="density s (share of B trained)")
    ax_s.set_xticks(x, [name.replace("block", "b") for name in layers], rotation=60, fontsize=8)
    ax_h.legend(fontsize=8)
    ax_s.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "a4.png", dpi=120)

    print(f"{'layer':<14}" + "".join(f"{'ℋ ' + t:>12}" for t in args.tasks)
          + "".join(f"{'s ' + t:>12}" for t in args.tasks))
    for i, layer in enumerate(layers):
        print(f"{layer:<14}" + "".join(f"{entropy[device_of[t], i]:>12.3f}" for t in args.tasks)
              + "".join(f"{density[device_of[t], i]:>12.3f}" for t in args.tasks))
    corr = np.corrcoef(entropy[device_of[args.tasks[0]]], entropy[device_of[args.tasks[1]]])[0, 1]
    print(f"correlation of the two tasks' entropy profiles over layers: {corr:.3f}")
    print(f"wrote {out}/a4.csv and {out}/a4.png in {clock}")


if __name__ == "__main__":
    main()
