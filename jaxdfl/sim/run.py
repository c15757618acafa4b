"""The run loop: Python orchestrates rounds, evaluation, logging and checkpoints; each round is one jitted
program. Everything a run produces lands in its output folder:

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
from jaxdfl.sim.checkpoint import Checkpointer
from jaxdfl.sim.engine import Simulation, build_simulation
from jaxdfl.sim.state import SimState


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


# per-round metrics the round program may return, logged as they come (see make_round_step)
ROUND_METRICS = ("covariance_fro", "collision_empirical", "collision_analytic", "links", "delivered", "outages",
                 "energy_j", "max_delay_s", "exchange_delay_s")


def stored_after(sim: Simulation, round_: int) -> float:
    """The topology's ``stored`` flag once round ``round_`` (0-based) is done: 1.0 when devices hold the
    experts of other clusters (for evaluation)."""
    return float(sim.topology.control(round_ + 1).get("stored", 0.0))


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
        "state_bytes_per_device": sum(leaf.nbytes for leaf in jax.tree.leaves(state)) / cfg.num_devices,
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
        summary["rank"] = cfg.method.rank
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
    if sim.method.expert is not None and cfg.num_devices > 1:
        experts = jax.vmap(sim.method.expert)(state.adapter)
        overlaps = [projection_overlap(layer["a"]) for layer in experts.values()]
        summary["projection_overlap"] = float(np.mean(overlaps))  # SPEC §2.1: near-orthogonal static A's
    return summary


def run(config: str | Path | dict | Config | None = None, overrides=(), out: str | Path | None = None,
        resume: bool = False, progress: bool = True) -> tuple[dict, SimState]:
    """Run one simulation end to end and write its output folder.

    Args:
      config: a YAML path, a bundled config name (``"quickstart"``), a dict, a :class:`Config`, or None
        for the quick start.
      overrides: ``["method.rank=8", ...]`` applied on top of ``config``.
      out: output folder; default ``runs/<config>-<timestamp>``.
      resume: continue from the newest checkpoint in ``out`` (same config required).
      progress: show a progress bar over rounds.

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
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    start = time.time()
    sim = build_simulation(cfg)
    key = jax.random.key(cfg.seed)
    state = sim.init_fn(jax.random.fold_in(key, 0))
    initial = _accuracy_record(np.asarray(sim.base_accuracy_fn())[None], sim)  # every method starts at the base
    clusters = _num_clusters(sim.topology)
    checkpointer = Checkpointer(out / "checkpoints")
    done = 0
    if resume and checkpointer.latest_round() is not None:
        done, state = checkpointer.restore(state)
    records = _read_metrics(metrics_path, done)
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    queue = records[-1].get("queue", 0.0) if records else 0.0  # the controller's virtual delay queue

    round_key = jax.random.fold_in(key, 1)
    bar = tqdm(total=cfg.rounds, initial=done, desc="rounds", unit="round", disable=not progress, dynamic_ncols=True)
    postfix: dict = {}
    acc = None
    try:
        with metrics_path.open("a") as log:
            for r in range(done, cfg.rounds):
                t0 = time.time()
                # `state` is donated to the round program: until the record below is written, only
                # `new_state` is alive, and it belongs to a round the metrics do not hold yet.
                active, control, control_record = sim.topology.active(r), sim.topology.control(r), {}
                if sim.controller is not None:
                    ratio, control_record, queue = sim.controller.step(queue, r, active)
                    control = control | ratio
                w = sim.topology.mixing(r)
                new_state, m = sim.round_fn(state, w, jax.random.fold_in(round_key, r), active, control or None,
                                            sim.positions(r))
                record = {"round": r + 1, "train_loss": float(m["train_loss"]),
                          "uplink_params": float(m["uplink_params"]), "uplink_bits": float(m["uplink_bits"]),
                          "senders": int(m["senders"]), **control_record}
                for key_ in ROUND_METRICS:
                    if key_ in m:
                        record[key_] = float(m[key_])
                if clusters is not None:
                    record["num_clusters"] = clusters(w)
                if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
                    acc = np.asarray(sim.evaluate_fn(new_state, w, stored_after(sim, r)))
                    record |= _accuracy_record(acc, sim)
                    postfix["acc"] = f"{record['accuracy']:.3f}"
                record["wall_s"] = time.time() - t0
                log.write(json.dumps(record) + "\n")
                log.flush()
                records.append(record)
                state, done = new_state, r + 1
                postfix["loss"] = f"{record['train_loss']:.3f}"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
                if cfg.checkpoint_every and done % cfg.checkpoint_every == 0:
                    checkpointer.save(done, state)
    finally:
        bar.close()
        if not any(leaf.is_deleted() for leaf in jax.tree.leaves(state)):
            checkpointer.save(done, state)  # a crash or Ctrl-C loses no completed round
        checkpointer.close()

    if acc is None:  # resumed at the very end: evaluate the restored state
        last = cfg.rounds - 1
        acc = np.asarray(sim.evaluate_fn(state, sim.topology.mixing(last), stored_after(sim, last)))
    generated = {}
    if sim.data.test_examples is not None:  # text: exact match of generated answers, adapted and base
        from jaxdfl.sim.text_eval import exact_match_by_task

        last = cfg.rounds - 1
        generated = {"exact_match": exact_match_by_task(sim, state, sim.topology.mixing(last), stored_after(sim, last)),
                     "initial_exact_match": exact_match_by_task(sim, None, None)}
    summary = summarize(sim, state, records, initial, acc, time.time() - start) | generated
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from jaxdfl.plotting import plot_run

    plot_run(out)
    return summary, state
