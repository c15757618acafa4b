"""The run loop: Python orchestrates evaluation, logging and checkpoints; the rounds between two of them run
as one jitted program (a ``lax.scan``). Everything a run produces lands in its output folder:

  config.yaml    the resolved config
  metrics.jsonl  one object per round (appended and flushed as the run goes)
  summary.json   final numbers
  curves.png     loss and accuracy against rounds
  checkpoints/   orbax checkpoints, for ``resume=True``
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import jax
import numpy as np
import yaml
from scipy.sparse.csgraph import connected_components
from tqdm.auto import tqdm

from jaxdfl.config import Config, load_config, resolve_path
from jaxdfl.errors import UserError
from jaxdfl.metrics import projection_overlap
from jaxdfl.sim.build import Simulation, build_simulation
from jaxdfl.sim.checkpoint import Checkpointer
from jaxdfl.sim.schedule import segments
from jaxdfl.sim.state import SimState
from jaxdfl.sim.writers import make_writers


def default_out_dir(source) -> Path:
    name = "custom" if not isinstance(source, (str, Path)) and source is not None else (
        resolve_path(source or "quickstart").stem)
    return Path("runs") / f"{name}-{datetime.now():%Y%m%d-%H%M%S}"


def _read_metrics(path: Path, upto_round: int) -> list[dict]:
    """The metric records of rounds ≤ ``upto_round`` (later ones belong to work a resume redoes)."""
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["round"] <= upto_round]


def stored_after(sim: Simulation, round_: int) -> float:
    """The topology's ``stored`` flag once round ``round_`` (0-based) is done: 1.0 when devices hold the
    experts of other clusters (for evaluation)."""
    return float(sim.topology.control(round_ + 1).stored)


def _num_clusters(topology) -> Callable[[np.ndarray], int] | None:
    """``w -> number of clusters`` for device-to-device topologies (AGNES clusters, or the connected components
    of the planned graph); None under a server."""
    if topology.name == "server":
        return None
    if topology.labels is not None:
        count = len(np.unique(topology.labels))
        return lambda w: count
    return lambda w: int(connected_components(np.asarray(w) != 0, directed=False)[0])


def task_accuracy(acc: np.ndarray, task_of_device: np.ndarray, routing: str) -> np.ndarray:
    """``acc`` ``[devices, tasks]`` → ``[tasks]``: the mean over devices, or under ``routing="oracle"``
    (hard-routing MoE) over the devices that trained on that task only."""
    if routing == "all" or len(acc) != len(task_of_device):
        return acc.mean(0)
    return np.array([acc[task_of_device == t, t].mean() for t in range(acc.shape[1])])


def _accuracy_record(acc: np.ndarray, sim: Simulation) -> dict:
    """Mean accuracy and per-task accuracy (see :func:`task_accuracy`)."""
    per_task = task_accuracy(acc, sim.data.task_of_device, sim.config.routing)
    return {"accuracy": float(per_task.mean()),
            "per_task_accuracy": {t: float(a) for t, a in zip(sim.data.task_names, per_task)}}


def summarize(sim: Simulation, state: SimState, records: list[dict], initial: dict, final_acc: np.ndarray,
              wall_s: float) -> dict:
    cfg, data = sim.config, sim.data
    final = _accuracy_record(final_acc, sim)
    trainable = sim.trainable_params(state)
    uplink_total = float(sum(r["uplink_params"] for r in records))
    sends = sum(r["senders"] for r in records)
    summary = {
        "final_accuracy": final["accuracy"],
        "per_task_accuracy": final["per_task_accuracy"],
        "per_task_chance": dict(zip(data.task_names, data.chance)),
        "initial_accuracy": initial["accuracy"],
        "initial_per_task_accuracy": initial["per_task_accuracy"],
        "routing": cfg.routing,
        "trainable_params": trainable,
        "trainable_pct": 100.0 * trainable / sim.base_params,
        "base_params": sim.base_params,
        # memory: the frozen base is stored once; each simulated device adds its adapter and optimizer state
        "base_bytes": sum(leaf.nbytes for leaf in jax.tree.leaves(sim.base)),
        "state_bytes_per_device": sum(leaf.nbytes for leaf in jax.tree.leaves((state.adapter, state.opt_state)))
        / cfg.num_devices,
        "uplink_params_total": uplink_total,
        "uplink_bits_total": float(sum(r["uplink_bits"] for r in records)),
        # what one sending device puts on the air in a round, as a share of the base model (Paper A Table I)
        "uplink_pct_per_round": 100.0 * uplink_total / sends / sim.base_params if sends else 0.0,
        "rounds": cfg.rounds,
        "seed": cfg.seed,
        "num_devices": cfg.num_devices,
        "method": cfg.method.name,
        "topology": cfg.topology.name,
        "wall_s": wall_s,
    }
    if sim.controller is not None:
        summary["rank"] = sim.controller.rank
        summary["initial_ratio"] = sim.controller.initial_ratio
        summary["time_avg_delay_s"] = float(np.mean([r["delay_s"] for r in records]))
        summary["delay_target_s"] = cfg.control.delay_target
    own = data.task_of_device
    if (own >= 0).all() and len(final_acc) == len(own):
        summary["own_task_accuracy"] = float(final_acc[np.arange(len(own)), own].mean())
    for key in ("collision_empirical", "collision_analytic", "num_clusters"):
        if records and key in records[-1]:
            summary[key] = records[-1][key]  # the last round's
    if records and "links" in records[-1]:
        for key in ("links", "delivered", "outages", "energy_j"):
            summary[f"{key}_total"] = float(sum(r[key] for r in records))
        summary["max_delay_s"] = max(r["max_delay_s"] for r in records)
    if sim.topology.labels is not None:
        summary["cluster_labels"] = sim.topology.labels.tolist()
    if sim.method.experts is not None and cfg.num_devices > 1:
        experts = jax.vmap(sim.method.experts.expert)(state.adapter)
        overlaps = [projection_overlap(layer["a"]) for layer in experts.values()]
        summary["projection_overlap"] = float(np.mean(overlaps))  # how near-orthogonal the static A's are
    return summary


def _round_records(metrics: dict, rounds: range, w: np.ndarray, clusters) -> list[dict]:
    """One record per round from the scanned program's stacked metrics (``[R]`` scalars are logged; per-device
    arrays such as ``device_loss`` are not), plus the number of clusters of each round's planned graph."""
    scalars = {k: np.asarray(v) for k, v in metrics.items() if np.ndim(v) == 1}
    records = []
    for i, r in enumerate(rounds):
        record = {"round": r + 1, **{k: v[i].item() for k, v in scalars.items()}}
        if clusters is not None:
            record["num_clusters"] = clusters(w[i])
        records.append(record)
    return records


def run(config: str | Path | dict | Config | None = None, overrides=(), out: str | Path | None = None,
        resume: bool = False, progress: bool = True, log=()) -> tuple[dict, SimState]:
    """Run one simulation end to end and write its output folder.

    Between two evaluations or checkpoints the rounds run as one program; ``metrics.jsonl`` is written after
    each such stretch, and ``wall_s`` of each of its rounds is the stretch's time (its evaluation included)
    divided by its rounds.

    Args:
      config: a YAML path, a bundled config name (``"quickstart"``), a dict, a :class:`Config`, or None
        for the quick start.
      overrides: ``["method.rank=8", ...]`` applied on top of ``config``.
      out: output folder; default ``runs/<config>-<timestamp>``.
      resume: continue from the newest checkpoint in ``out`` (same config required).
      progress: show a progress bar over rounds.
      log: metric writers beside ``metrics.jsonl``: ``"tensorboard"``, ``"wandb"`` (:mod:`jaxdfl.sim.writers`).

    Returns:
      ``(summary, state)``: the dict written to ``summary.json`` and the final :class:`SimState`.
    """
    cfg = load_config(config, overrides)
    if resume and out is None:
        raise UserError("resume needs the run's folder: pass out=DIR (CLI: --out DIR)")
    out = Path(out) if out is not None else default_out_dir(config)
    metrics_path = out / "metrics.jsonl"
    if resume:
        saved = out / "config.yaml"
        if not saved.exists():
            raise UserError(f"cannot resume: {saved} does not exist")
        if yaml.safe_load(saved.read_text()) != cfg.to_dict():
            raise UserError(f"cannot resume: the config differs from the one saved in {saved}")
    elif metrics_path.exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")

    make_writers(log, out, cfg.to_dict(), check_only=True)
    start = time.time()
    sim = build_simulation(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    writers = make_writers(log, out, cfg.to_dict())
    state = sim.init_fn(jax.random.fold_in(jax.random.key(cfg.seed), 0))
    initial = _accuracy_record(np.asarray(sim.base_accuracy_fn())[None], sim)  # every method starts at the base
    clusters = _num_clusters(sim.topology)
    checkpointer = Checkpointer(out / "checkpoints")
    done = 0
    if resume and checkpointer.latest_round() is not None:
        done, state = checkpointer.restore(state)
    records = _read_metrics(metrics_path, done)
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))

    bar = tqdm(total=cfg.rounds, initial=done, desc="rounds", unit="round", disable=not progress, dynamic_ncols=True)
    postfix: dict = {}
    acc = None
    try:
        with metrics_path.open("a") as jsonl:
            for first, stop in segments(done, cfg.rounds, cfg.eval_every, cfg.checkpoint_every):
                t0 = time.time()
                inputs = sim.inputs(first, stop)
                # `state` is donated to the program: until the records below are written, only `new_state`
                # is alive, and it belongs to rounds the metrics do not hold yet.
                new_state, metrics = sim.run_rounds(state, inputs)
                new = _round_records(jax.device_get(metrics), range(first, stop), inputs.w, clusters)
                if stop % cfg.eval_every == 0 or stop == cfg.rounds:
                    acc = np.asarray(sim.evaluate_fn(new_state, inputs.w[-1], stored_after(sim, stop - 1)))
                    new[-1] |= _accuracy_record(acc, sim)
                    postfix["acc"] = f"{new[-1]['accuracy']:.3f}"
                for record in new:
                    record["wall_s"] = (time.time() - t0) / len(new)
                    jsonl.write(json.dumps(record) + "\n")
                    for writer in writers:
                        writer.write(record)
                jsonl.flush()
                records += new
                state, done = new_state, stop
                postfix["loss"] = f"{new[-1]['train_loss']:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(len(new))
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                    checkpointer.save(done, state)
    finally:
        bar.close()
        if not any(leaf.is_deleted() for leaf in jax.tree.leaves(state)):
            checkpointer.save(done, state)  # a crash or Ctrl-C loses no completed round
        checkpointer.close()
        for writer in writers:
            writer.close()

    last = cfg.rounds - 1
    w_last = sim.topology.mixing(last)
    if acc is None:  # resumed at the very end: evaluate the restored state
        acc = np.asarray(sim.evaluate_fn(state, w_last, stored_after(sim, last)))
    generated = {}
    if sim.data.test_examples is not None:  # text: exact match of generated answers, adapted and base
        from jaxdfl.sim.text_eval import exact_match_by_task

        generated = {"exact_match": exact_match_by_task(sim, state, w_last, stored_after(sim, last)),
                     "initial_exact_match": exact_match_by_task(sim, None, None)}
    summary = summarize(sim, state, records, initial, acc, time.time() - start) | generated
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from jaxdfl.plotting import plot_run

    plot_run(out)
    return summary, state
