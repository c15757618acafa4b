"""Plots of a run folder (``jaxdfl plot DIR``)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_run(run_dir: str | Path) -> Path:
    """Write ``curves.png``: training loss and test accuracy (mean and per task, chance dashed) per round."""
    run_dir = Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        from jaxdfl.errors import UserError

        raise UserError(f"{run_dir} has no metrics.jsonl; is it a jaxdfl run folder?")
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill: nothing to draw from it
            pass
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    finite = [r for r in records if r.get("train_loss") is not None]  # non-finite losses are logged as null
    ax_loss.plot([r["round"] for r in finite], [r["train_loss"] for r in finite], color="black")
    ax_loss.set(xlabel="round", ylabel="mean local training loss", yscale="log", title="training loss")

    evals = [r for r in records if r.get("accuracy") is not None]
    initial = summary.get("initial_per_task_accuracy")
    rounds = ([0] if initial else []) + [r["round"] for r in evals]
    tasks = list(evals[0]["per_task_accuracy"]) if evals else []
    for i, task in enumerate(tasks):
        values = ([initial[task]] if initial else []) + [r["per_task_accuracy"][task] for r in evals]
        line, = ax_acc.plot(rounds, values, marker="o", ms=3, label=task, color=f"C{i}")
        chance = summary.get("per_task_chance", {}).get(task)
        if chance is not None:
            ax_acc.axhline(chance, color=line.get_color(), ls=":", lw=1)
    if evals:
        mean = ([summary["initial_accuracy"]] if initial else []) + [r["accuracy"] for r in evals]
        ax_acc.plot(rounds, mean, color="black", lw=2, label="mean")
    ax_acc.set(xlabel="round", ylabel="test accuracy (mean over devices)", ylim=(0, 1),
               title="accuracy per task (dotted: chance)")
    if evals:
        ax_acc.legend(fontsize=8, loc="lower right")
    title = run_dir.name
    if "method" in summary:
        title += f" — {summary['method']} on {summary['topology']}, {summary['num_devices']} devices"
    elif summary.get("status") in ("diverged", "failed"):
        title += f" — {summary['status']}"
    fig.suptitle(title)
    fig.tight_layout()
    out = run_dir / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
