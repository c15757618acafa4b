"""``jaxdfl learn``: gradient descent on a design through whole rollouts, then the design frozen and judged by
full runs from scratch, beside the config's own design run the same way.

A study's folder:

  config.yaml    the resolved config (its ``study`` section says what was learned and how)
  learn.jsonl    one record per outer step: the objective, its parts, the gradient's norm
  design.npz     the learned design: ``w`` (pruned, rows renormalised), ``power``, ``positions``,
                 ``bandwidth_shares``, and the raw parameters (``param_*``)
  summary.json   objective before and after, the design's statistics, retrained test accuracy (mean ± std
                 over ``study.retrain_seeds``) of the learned design and of the config's own
  learn.png, design.png   the objective against steps; the learned design
  retrain/       the full runs (each a run folder)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxdfl.config import Config, load_config
from jaxdfl.diff.design import masked_softmax, place, transmit_power
from jaxdfl.diff.rollout import outcome
from jaxdfl.errors import UserError
from jaxdfl.sim.build import build_simulation
from jaxdfl.sim.run_folder import RunFolder, strict


def frozen_design(sim, design: dict, w_learned, prune: float, degree: int = 0) -> dict[str, np.ndarray]:
    """The design as arrays a run reads: W with weights below ``prune`` dropped (with ``degree`` > 0 also all
    but each device's ``degree`` heaviest neighbours) and rows renormalised (the diagonal kept), each
    device's power, positions, bandwidth shares."""
    cfg = sim.config
    out = {f"param_{k}": np.asarray(v) for k, v in design.items()}
    w = np.asarray(w_learned, np.float64)
    keep = (w >= prune) | np.eye(len(w), dtype=bool)
    if degree:
        off = np.where(np.eye(len(w), dtype=bool), -np.inf, w)
        keep &= (off >= np.sort(off, axis=1)[:, -degree][:, None]) | np.eye(len(w), dtype=bool)
    w = np.where(keep, w, 0.0)
    out["w"] = (w / w.sum(1, keepdims=True)).astype(np.float32)
    if "power" in design:
        out["power"] = np.asarray(transmit_power(design["power"], cfg.network.power_max), np.float32)
    if "positions" in design:
        out["positions"] = np.asarray(place(design["positions"], cfg.network.radius), np.float32)
    if "bandwidth" in design:
        out["bandwidth_shares"] = np.asarray(masked_softmax(design["bandwidth"], jnp.asarray(w.T != 0)))
    return out


def design_stats(sim, w: np.ndarray) -> dict:
    """How a mixing matrix spends each device's weight: on same-task devices (the ``by_task`` oracle has
    1.0), the links it keeps, and its effective neighbours (exp of each row's entropy, self included)."""
    tasks = sim.data.task_of_device
    same = tasks[:, None] == tasks[None, :]
    off = ~np.eye(len(w), dtype=bool)
    p = np.where(w > 0, w, 1.0)
    return {"same_task_weight": float(np.mean(np.sum(w * same, 1))) if (tasks >= 0).all() else None,
            "links": int(np.sum((w > 0) & off)),
            "effective_neighbours": float(np.mean(np.exp(-np.sum(w * np.log(p), 1))))}


def learn(config: str | Path | dict | Config | None = None, overrides=(), out: str | Path | None = None,
          progress: bool = True, verbose: bool = False) -> dict:
    """Run the study the config's ``study`` section describes into ``out``; returns ``summary.json``."""
    say = print if verbose else (lambda *args, **kwargs: None)
    cfg = load_config(config, overrides)
    if out is None:
        raise UserError("a study needs its folder: pass out=DIR (CLI: --out DIR)")
    folder = RunFolder(Path(out))
    folder.claim(resume=False)
    try:
        sim = build_simulation(cfg, status=say)
        folder.start(cfg.to_dict())
        summary = _study(sim, folder, progress, say)
    except BaseException:
        folder.release()
        raise
    folder.release()
    return summary


def _study(sim, folder: RunFolder, progress: bool, say) -> dict:
    cfg, study, out = sim.config, sim.config.study, folder.out
    say(f"jaxdfl: learning {', '.join(study.learn)} through {study.rounds}-round rollouts "
        f"({study.steps} steps; compiling the rollout and its gradient…)")
    design, fn = outcome(sim, study.rounds, study.learn, target=study.target, mixing=study.mixing,
                         candidates=study.candidates, weights=study.weights, validation=study.validation)
    optimizer = (optax.adam if study.optimizer == "adam" else optax.sgd)(study.learning_rate)
    opt_state = optimizer.init(design)
    value_and_grad = jax.jit(jax.value_and_grad(fn, has_aux=True))
    base_key = jax.random.fold_in(jax.random.key(cfg.seed), 11)
    records, t0 = [], time.time()
    bar = tqdm(range(study.steps + 1), desc="design steps", disable=not progress, dynamic_ncols=True)
    with (out / "learn.jsonl").open("w") as log:
        for step in bar:
            key = jax.random.fold_in(base_key, step) if study.keys == "resample" else base_key
            (value, aux), grads = value_and_grad(design, key)
            record = {"step": step, "objective": float(value),
                      **{k: float(v) for k, v in aux.items() if np.ndim(v) == 0},
                      "grad_norm": float(optax.tree.norm(grads)), "wall_s": time.time() - t0}
            log.write(json.dumps(strict(record), allow_nan=False) + "\n")
            log.flush()
            records.append(record)
            bar.set_postfix(objective=f"{record['objective']:.4f}", acc=f"{record['validation_accuracy']:.3f}")
            if step == study.steps:  # the last record scores the final design; no update after it
                break
            updates, opt_state = optimizer.update(grads, opt_state, design)
            design = optax.apply_updates(design, updates)
    frozen = frozen_design(sim, design, aux["w"], study.prune, study.degree)
    np.savez(out / "design.npz", **frozen)
    say("jaxdfl: retraining from scratch with the learned design frozen, and with the config's own…")
    retrained = _retrain(cfg, out, progress)
    from jaxdfl.diff.plots import plot_study

    summary = {"learn": list(study.learn), "steps": study.steps, "rounds_per_rollout": study.rounds,
               "objective_first": records[0]["objective"], "objective_last": records[-1]["objective"],
               "validation_accuracy_first": records[0]["validation_accuracy"],
               "validation_accuracy_last": records[-1]["validation_accuracy"],
               "design": design_stats(sim, frozen["w"]), "design_initial": design_stats(sim, sim.topology.mixing(0)),
               **retrained, "learn_s": records[-1]["wall_s"]}
    folder.write_summary(strict(summary))
    plot_study(out, sim, frozen)
    return summary


def _retrain(cfg: Config, out: Path, progress: bool) -> dict:
    """Full runs from scratch, one per ``study.retrain_seeds``: the learned design frozen, and the config's."""
    from jaxdfl.sim.run import run

    study = cfg.study
    learned = ["topology.name=matrix", f"topology.matrix={out / 'design.npz'}"] if "mixing" in study.learn else []
    if set(study.learn) & {"power", "positions"}:
        learned.append(f"network.design={out / 'design.npz'}")
    result = {}
    for name, extra in (("learned", learned), ("config", [])):
        runs = [run(cfg, [*extra, f"seed={seed}"], out=out / "retrain" / f"{name}-seed{seed}", progress=progress)[0]
                for seed in study.retrain_seeds]
        result[f"retrained_{name}"] = {key: _spread([s[key] for s in runs]) for key in
                                       ("final_accuracy", "own_task_accuracy", "energy_j_total", "outages_total")
                                       if key in runs[0]}
    return result


def _spread(values: list[float]) -> dict:
    return {"values": values, "mean": float(np.mean(values)), "std": float(np.std(values))}
