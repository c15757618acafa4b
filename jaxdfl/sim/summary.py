"""What a run reports: per-task accuracy records and the final summary."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

from jaxdfl.core import expert_views, has_lora_factors
from jaxdfl.federation.buffered import Buffer, with_global
from jaxdfl.metrics import gram_offdiagonal, projection_overlap
from jaxdfl.sim.build import Simulation
from jaxdfl.sim.processes import to_host
from jaxdfl.sim.state import SimState
from jaxdfl.topology import Neighbours


def num_clusters(topology) -> Callable[[np.ndarray], int] | None:
    """``w -> number of clusters`` for device-to-device topologies (AGNES clusters, or the connected components
    of the planned graph); None under a server."""
    if topology.name == "server":
        return None
    if topology.labels is not None:
        count = len(np.unique(topology.labels))
        return lambda w: count
    return lambda w: int(connected_components(_graph(w), directed=False)[0])


def _graph(w) -> np.ndarray | csr_array:
    """The links of W (dense, or a sparse matrix built from neighbour lists in O(M·D))."""
    if not isinstance(w, Neighbours):
        return np.asarray(w) != 0
    index, weight = np.asarray(w.index), np.asarray(w.weight)
    rows = np.repeat(np.arange(len(index)), index.shape[1])
    return csr_array(((weight != 0).ravel(), (rows, index.ravel())), shape=(len(index),) * 2)


def task_accuracy(acc: np.ndarray, task_of_device: np.ndarray, routing: str) -> np.ndarray:
    """``acc`` ``[devices, tasks]`` → ``[tasks]``: the mean over devices, or under ``routing="oracle"``
    (hard-routing MoE) over the devices that trained on that task only."""
    if routing == "all" or len(acc) != len(task_of_device):
        return acc.mean(0)
    return np.array([acc[task_of_device == t, t].mean() for t in range(acc.shape[1])])


def evaluated_devices(sim: Simulation) -> np.ndarray:
    """``[N]``: the devices whose rows ``evaluate_fn`` returns (every device, or the ``eval_devices``
    sample; under a server it returns one row, the global model)."""
    return np.arange(sim.config.num_devices) if sim.evaluated is None else sim.evaluated


def accuracy_record(acc: np.ndarray, sim: Simulation, alive: np.ndarray | None = None) -> dict:
    """Mean accuracy and per-task accuracy (see :func:`task_accuracy`) over the evaluated devices still
    ``alive``."""
    devices = evaluated_devices(sim)
    keep = slice(None) if alive is None or len(devices) != len(acc) else np.asarray(alive)[devices]
    task_of_device = sim.data.task_of_device[devices][keep]
    per_task = task_accuracy(acc[keep], task_of_device, sim.config.routing)
    return {"accuracy": float(per_task.mean()),
            "per_task_accuracy": {t: float(a) for t, a in zip(sim.data.task_names, per_task)}}


def routing_share(sim, shares: dict, w: np.ndarray, stored: float) -> dict:
    """The routing diagnostic in ``summary.json``: per layer, the share of the implicit top-k's components that
    come from experts of the input's own task (``shares`` ``{layer: [N, T]}`` from ``evaluate_fn(...,
    "share")``), averaged over evaluated devices and tasks; and what that share would be if the top-k
    ignored the task (each held expert's share of the held experts)."""
    if not shares:
        return {}
    view = expert_views(None, jnp.asarray(w), stored)  # the experts each device answers with, as evaluation
    holds = np.asarray(jnp.maximum(view.held, view.stored))[evaluated_devices(sim)] > 0  # [N, M]
    tasks = sim.data.task_of_device
    blind = np.stack([(holds & (tasks == t)).sum(1) / holds.sum(1) for t in range(len(sim.data.task_names))], 1)
    layers = {name: float(np.asarray(v).mean()) for name, v in shares.items()}
    return {"routing_share": layers, "routing_share_mean": float(np.mean(list(layers.values()))),
            "routing_share_blind": float(blind.mean())}


def summarize(sim: Simulation, state: SimState, records: list[dict], initial: dict, final_acc: np.ndarray,
              wall_s: float) -> dict:
    """What ``summary.json`` holds (the README lists every field)."""
    cfg, data = sim.config, sim.data
    alive = None if state.alive is None else to_host(state.alive)[:cfg.num_devices]  # real devices, no padding
    final = accuracy_record(final_acc, sim, alive)
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
        / (sim.padded or cfg.num_devices),
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
        "status": "finished",
    }
    if jax.process_count() > 1:
        summary["processes"] = jax.process_count()  # the device axis spread over this many (jaxdfl.sim.processes)
    if alive is not None:
        summary["dropped_devices"] = np.flatnonzero(~alive).tolist()
    if sim.controller is not None:
        summary["rank"] = sim.controller.rank
        summary["initial_ratio"] = sim.controller.initial_ratio
        summary["time_avg_delay_s"] = float(np.mean([r["delay_s"] for r in records]))
        summary["delay_target_s"] = cfg.control.delay_target
    own = data.task_of_device[evaluated_devices(sim)]
    if (own >= 0).all() and len(final_acc) == len(own):
        summary["own_task_accuracy"] = float(final_acc[np.arange(len(own)), own].mean())
    if sim.evaluated is not None:
        summary["evaluated_devices"] = len(sim.evaluated)  # accuracies are this sample's
    for key in ("collision_empirical", "collision_analytic", "num_clusters"):
        if records and key in records[-1]:
            summary[key] = records[-1][key]  # the last round's
    if records and "messages_planned" in records[-1]:  # planned = delivered + lost, cause by cause
        summary["messages_total"] = {key[len("messages_"):]: float(sum(r[key] for r in records))
                                     for key in records[-1] if key.startswith("messages_")}
    if records and "epsilon" in records[-1]:
        summary["epsilon"], summary["delta"] = records[-1]["epsilon"], cfg.privacy.delta
    if records and "server_steps" in records[-1]:  # FedBuff: the global model's steps, the arrivals' mean τ
        summary["server_steps"] = int(records[-1]["server_steps"])
        arrived = np.array([r["messages_delivered"] for r in records], float)
        stale = np.array([r["staleness_mean"] for r in records], float)
        summary["staleness_mean"] = float((stale * arrived).sum() / max(arrived.sum(), 1.0))
    if records and "online_devices" in records[-1]:
        summary["online_share"] = float(np.mean([r["online_devices"] for r in records])) / cfg.num_devices
    if sim.device.byzantine is not None:
        summary["byzantine_devices"] = np.flatnonzero(to_host(sim.device.byzantine)[:cfg.num_devices]).tolist()
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
    params = state.adapter.params
    if isinstance(state.buffer, Buffer):  # FedBuff: device 0 may hold a stale copy; the global model is the buffer's
        params = with_global(state.adapter, state.buffer).params
    if has_lora_factors(params):  # device 0 (under a server:
        summary["b_gram_offdiagonal"] = {  # the global model), in float64 on the host: the same in any layout
            name: float(gram_offdiagonal(np.asarray(to_host(p["b"][0]), np.float64))) for name, p in params.items()}
    return summary
