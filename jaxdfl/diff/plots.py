"""Plots of a study folder: the objective against outer steps, and the learned design."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_study(out: Path, sim, design: dict) -> None:
    """``learn.png`` (objective and validation accuracy per step) and ``design.png`` (W ordered by task, the
    devices on their map with links drawn by weight, powers)."""
    records = [json.loads(line) for line in (out / "learn.jsonl").read_text().splitlines()]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = [r["step"] for r in records]
    ax[0].plot(steps, [r["objective"] for r in records], color="black", label="objective")
    ax[0].plot(steps, [r["validation_loss"] for r in records], color="C0", ls="--", label="validation loss")
    ax[0].set(xlabel="design step", title="objective (validation loss + penalties)")
    ax[0].legend(fontsize=8)
    ax[1].plot(steps, [r["validation_accuracy"] for r in records], color="C2")
    ax[1].set(xlabel="design step", ylabel="validation accuracy", title="what the devices learn, per step")
    fig.tight_layout()
    fig.savefig(out / "learn.png", dpi=110)
    plt.close(fig)

    tasks = sim.data.task_of_device
    order = np.argsort(tasks, kind="stable")
    positions = design.get("positions", sim.positions(0))
    panels = 1 + (positions is not None) + ("power" in design)
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2), squeeze=False)
    axes = list(axes[0])
    w = design["w"]
    image = axes[0].imshow(w[np.ix_(order, order)], cmap="viridis")
    ticks = [f"{i}:{sim.data.task_names[tasks[i]]}" if tasks[i] >= 0 else str(i) for i in order]
    axes[0].set_xticks(range(len(order)), ticks, rotation=90, fontsize=6)
    axes[0].set_yticks(range(len(order)), ticks, fontsize=6)
    axes[0].set_title("mixing matrix W (devices ordered by task)")
    fig.colorbar(image, ax=axes[0], fraction=0.046)
    if positions is not None:
        ax = axes[1]
        for i in range(len(w)):
            for j in range(len(w)):
                if i != j and w[i, j] > 0:
                    ax.plot(*positions[[i, j]].T, color="grey", alpha=float(min(1.0, 3 * w[i, j])), lw=0.8)
        for t, name in enumerate(sim.data.task_names):
            here = tasks == t
            ax.scatter(*positions[here].T, s=30, label=name, zorder=3)
        ax.set(title="devices and their links (opacity: weight)", aspect="equal")
        ax.legend(fontsize=7)
    if "power" in design:
        axes[-1].bar(range(len(design["power"])), design["power"] * 1e3, color="C3")
        axes[-1].set(xlabel="device", ylabel="transmit power (mW)", title="learned power")
    fig.tight_layout()
    fig.savefig(out / "design.png", dpi=110)
    plt.close(fig)
