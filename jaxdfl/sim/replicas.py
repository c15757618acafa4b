"""What the run loop drives: one simulation, or ``replicas: S`` seeds of it as one more vmapped axis.

Replica s is the run of ``seed + s``: its data split, adapter init, batches, topology draws, device positions
and evaluation sample are that seed's, so replica 0 is the plain run of ``seed``. The frozen base, the training
pool and the test sets do not depend on the seed and are stored once; the state and the rounds' inputs gain a
leading replica axis (``[S, M, ...]``, ``[R, S, ...]``), and one program runs every replica's rounds.

:class:`Single` and :class:`Replicas` offer the run loop (:mod:`jaxdfl.sim.run`) the same methods; the
replicas' records and summary hold each replica's numbers under ``"replicas"`` and their mean (and, in the
summary, ``"std"``) at the top level, so readers of a plain run's files read the mean.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxdfl.federation.buffered import buffer_sharding, with_global
from jaxdfl.federation.privacy import epsilon_after
from jaxdfl.sim.build import Simulation, build_simulation, load_model
from jaxdfl.sim.evaluate import ROUTINGS
from jaxdfl.sim.mesh import DEVICE_AXIS, replicated
from jaxdfl.sim.padding import real_part
from jaxdfl.sim.processes import to_host
from jaxdfl.sim.round import DeviceData
from jaxdfl.sim.run_folder import strict
from jaxdfl.sim.state import RoundInputs, SimState, Variates
from jaxdfl.sim.summary import accuracy_record, num_clusters, routing_share, summarize
from jaxdfl.topology import Neighbours, drop_senders
from jaxdfl.topology.neighbours import widen


def stored_after(sim: Simulation, round_: int) -> float:
    """The topology's ``stored`` flag once round ``round_`` (0-based) is done: 1.0 when devices hold the
    experts of other clusters (for evaluation)."""
    return float(sim.topology.control(round_ + 1).stored)


def round_records(sim: Simulation, metrics: dict, rounds: range, w) -> list[dict]:
    """One record per round from the scanned program's stacked metrics (``[R]`` scalars are logged; per-device
    arrays such as ``device_loss`` are not), plus the number of clusters of each round's planned graph."""
    clusters = num_clusters(sim.topology)
    cfg = sim.config
    m = cfg.num_devices  # the real devices' part of a padded W (jaxdfl.sim.padding)
    scalars = {k: np.asarray(v) for k, v in metrics.items() if np.ndim(v) == 1}
    records = []
    for i, r in enumerate(rounds):
        record = {"round": r + 1, **{k: v[i].item() for k, v in scalars.items()}}
        if cfg.privacy.mechanism != "none":  # the budget spent by the end of this round
            record["epsilon"] = epsilon_after(cfg.privacy, m, cfg.topology.clients_per_round, r + 1)
        if clusters is not None:
            record["num_clusters"] = clusters(real_part(jax.tree.map(lambda a: a[i], w), m))
        records.append(record)
    return records


ROUTED = tuple(r for r in ROUTINGS if r != "mixture")  # the summary's evaluations beside the mixture


def routes(sim: Simulation) -> bool:
    """Whether the summary reports :data:`ROUTED`: an expert mixture whose every device trained on one task."""
    return sim.method.experts is not None and bool((sim.data.task_of_device >= 0).all())


def evaluation_mixing(sim: Simulation, round_: int, alive) -> jax.Array | Neighbours:
    """Round ``round_``'s W as evaluation reads it: dropped devices out of everyone's experts."""
    w = jax.tree.map(jnp.asarray, sim.mixing(round_))
    return w if alive is None else drop_senders(w, alive)


class Single:
    """One simulation (``replicas: 1``): the run loop's view of a :class:`Simulation`."""

    def __init__(self, sim: Simulation):
        self.sim, self.config = sim, sim.config

    def init_state(self) -> SimState:
        return self.sim.init_fn(jax.random.fold_in(jax.random.key(self.config.seed), 0))

    def inputs(self, start: int, stop: int) -> RoundInputs:
        return self.sim.inputs(start, stop)

    def run_rounds(self, state: SimState, inputs: RoundInputs):
        return self.sim.run_rounds(state, inputs)

    def records(self, metrics: dict, rounds: range, inputs: RoundInputs) -> list[dict]:
        return round_records(self.sim, metrics, rounds, inputs.w)

    def diverged_devices(self, metrics: dict, i: int) -> np.ndarray:
        """The devices whose loss or adapter went non-finite in the ``i``-th round of ``metrics``."""
        return np.flatnonzero(~metrics["finite"][i])

    def initial_record(self) -> dict:
        """Every method starts at the frozen base."""
        return accuracy_record(np.asarray(self.sim.base_accuracy_fn())[None], self.sim)

    def evaluate(self, state: SimState, round_: int) -> np.ndarray:
        """``[N, T]`` accuracies after round ``round_`` (0-based)."""
        w = evaluation_mixing(self.sim, round_, state.alive)
        return np.asarray(self.sim.evaluate_fn(state, w, stored_after(self.sim, round_)))

    def accuracy_record(self, acc: np.ndarray, state: SimState) -> dict:
        return accuracy_record(acc, self.sim, None if state.alive is None else to_host(state.alive))

    def summarize(self, state: SimState, records: list[dict], initial: dict, acc: np.ndarray, wall_s: float):
        return self._summary(state, records, initial, acc, wall_s, self._routed_evaluations(state),
                             _base_exact_match(self.sim))

    def _summary(self, state: SimState, records: list[dict], initial: dict, acc: np.ndarray, wall_s: float,
                 routed: dict | None, base_exact_match: dict | None) -> dict:
        return (summarize(self.sim, state, records, initial, acc, wall_s) | self._routed(state, routed)
                | _exact_match(self.sim, state, base_exact_match))

    def _routed_evaluations(self, state: SimState) -> dict | None:
        """Expert mixtures whose devices each trained on one task: ``evaluate_fn``'s :data:`ROUTED` evaluations
        after the last round, and under ``"mixing"`` the W they read (None for other runs)."""
        if not routes(self.sim):
            return None
        last = self.config.rounds - 1
        w, stored = evaluation_mixing(self.sim, last, state.alive), stored_after(self.sim, last)
        return {routing: self.sim.evaluate_fn(state, w, stored, routing) for routing in ROUTED} | {"mixing": w}

    def _routed(self, state: SimState, routed: dict | None) -> dict:
        """The final accuracy with each device's own adapter alone and with oracle routing (each task's inputs
        to the held experts trained on it), beside the mixture's ``final_accuracy``, and the routing share,
        from :meth:`_routed_evaluations`' ``routed``."""
        if routed is None:
            return {}
        out = {}
        for routing, key in (("own", "accuracy_own_adapter"), ("oracle", "accuracy_oracle_routing")):
            record = self.accuracy_record(np.asarray(routed[routing]), state)
            out[key], out[f"per_task_{key}"] = record["accuracy"], record["per_task_accuracy"]
        stored = stored_after(self.sim, self.config.rounds - 1)
        return out | routing_share(self.sim, routed["share"], np.asarray(routed["mixing"]), stored)


class Replicas(Single):
    """``replicas: S`` seeds in one program; :attr:`sim` is replica 0's simulation, :attr:`sims` all S."""

    def __init__(self, sims: list[Simulation], config):
        super().__init__(sims[0])
        self.sims, self.config = sims, config
        first = sims[0]
        base_axis = 0 if config.model.checkpoint == "random" else None  # a random base is drawn per seed
        data = DeviceData(_stack([s.device.base for s in sims]) if base_axis == 0 else first.device.base,
                          first.device.x, first.device.y, _stack_padded([s.device.index for s in sims]),
                          _stack([s.device.n for s in sims]),
                          None if first.device.byzantine is None else _stack([s.device.byzantine for s in sims]))
        data_axes = DeviceData(base_axis, None, None, 0, 0, 0)
        on_devices = NamedSharding(first.mesh, PartitionSpec(None, DEVICE_AXIS))
        everywhere = replicated(first.mesh)
        buffered = config.stragglers.rule == "buffered"
        self.state_sharding = SimState(on_devices, on_devices, everywhere,
                                       None if config.on_nonfinite != "drop_device" else on_devices, everywhere,
                                       Variates(on_devices, everywhere) if config.scaffold.enabled else everywhere,
                                       buffer_sharding(on_devices, everywhere) if buffered else everywhere)

        def scan(state, data, inputs):
            step = jax.vmap(first.round_step, in_axes=(0, data_axes, 0))
            return jax.lax.scan(lambda s, one: step(s, data, one), state, inputs)

        scanned = jax.jit(scan, out_shardings=(self.state_sharding, everywhere), donate_argnums=0)
        self._run = functools.partial(scanned, data=data)
        server = config.topology.name == "server"
        samples = [s.evaluated for s in sims]
        devices = (np.zeros((len(sims), 1), np.int32) if server else
                   None if samples[0] is None else np.stack(samples))

        def evaluate(state, w, stored, devices, base, routing="mixture"):
            def one(adapter, w, devices, base):
                return first.evaluate(adapter, base, first.test, w, stored, devices, routing)
            adapter = jax.vmap(with_global)(state.adapter, state.buffer) if buffered else state.adapter
            return jax.vmap(one, in_axes=(0, 0, None if devices is None else 0, base_axis))(
                adapter, w, devices, base)

        self._evaluate = functools.partial(jax.jit(evaluate, static_argnames="routing", out_shardings=everywhere),
                                           devices=devices, base=data.base)

    def init_state(self) -> SimState:
        keys = [jax.random.fold_in(jax.random.key(s.config.seed), 0) for s in self.sims]
        return jax.device_put(_stack([s.init_fn(k) for s, k in zip(self.sims, keys)]), self.state_sharding)

    def inputs(self, start: int, stop: int) -> RoundInputs:
        """Every replica's inputs, stacked on axis 1: ``[R, S, ...]``."""
        each = [s.inputs(start, stop) for s in self.sims]
        if isinstance(each[0].w, Neighbours):  # seeds may draw graphs of different widest degree
            width = max(i.w.index.shape[-1] for i in each)
            each = [i._replace(w=widen(i.w, width)) for i in each]
        return jax.tree.map(lambda *xs: (jnp if isinstance(xs[0], jax.Array) else np).stack(xs, 1), *each)

    def run_rounds(self, state: SimState, inputs: RoundInputs):
        return self._run(state, inputs=inputs)

    def records(self, metrics: dict, rounds: range, inputs: RoundInputs) -> list[dict]:
        per = [round_records(s, _replica(metrics, r, axis=1), rounds, _replica(inputs.w, r, axis=1))
               for r, s in enumerate(self.sims)]
        return [_mean(rows) for rows in zip(*per)]

    def diverged_devices(self, metrics: dict, i: int) -> np.ndarray:
        """Of the first replica that diverged in round ``i`` of ``metrics``."""
        finite = np.asarray(metrics["finite"][i])  # [S, M]
        return np.flatnonzero(~finite[np.argmax(~finite.all(1))])

    def initial_record(self) -> dict:
        acc = np.asarray(self.sim.base_accuracy_fn())[None]  # one base, one test set: the same for every seed
        return _mean([accuracy_record(acc, s) for s in self.sims])

    def evaluate(self, state: SimState, round_: int) -> np.ndarray:
        """``[S, N, T]``."""
        return np.asarray(self._evaluate(state, self._mixing(state, round_), stored_after(self.sim, round_)))

    def _mixing(self, state: SimState, round_: int):
        """Every replica's :func:`evaluation_mixing`, stacked."""
        alive = [None] * len(self.sims) if state.alive is None else list(state.alive)
        return _stack([evaluation_mixing(s, round_, a) for s, a in zip(self.sims, alive)], padded=True)

    def _routed_evaluations(self, state: SimState) -> dict | None:
        """Every replica's, in one program (``[S, ...]``)."""
        if not routes(self.sim):
            return None
        last = self.config.rounds - 1
        w, stored = self._mixing(state, last), stored_after(self.sim, last)
        return {routing: self._evaluate(state, w, stored, routing=routing) for routing in ROUTED} | {"mixing": w}

    def accuracy_record(self, acc: np.ndarray, state: SimState) -> dict:
        return _mean([Single(s).accuracy_record(acc[r], _replica(state, r)) for r, s in enumerate(self.sims)])

    def summarize(self, state: SimState, records: list[dict], initial: dict, acc: np.ndarray, wall_s: float):
        """Each replica's summary under ``replicas`` (its own records and seed), their mean at the top level
        and their standard deviation under ``std``."""
        routed = self._routed_evaluations(state)
        shared_base = self.config.model.checkpoint != "random"  # else each seed draws its own base
        base_em = _base_exact_match(self.sim) if shared_base else None
        per = []
        for r, s in enumerate(self.sims):
            own = [{"round": rec["round"], **rec["replicas"][r]} for rec in records]
            per.append(Single(s)._summary(_replica(state, r), own, initial["replicas"][r], acc[r], wall_s,
                                          None if routed is None else _replica(routed, r),
                                          base_em if shared_base else _base_exact_match(s)))
        summary = _mean(per, std=True)
        del summary["std"]["seed"]
        return summary | {"seed": self.config.seed, "seeds": [s.config.seed for s in self.sims]}


def merged(record: dict, extra: dict) -> dict:
    """``record | extra``, each replica's entries merged too."""
    if "replicas" not in extra:
        return record | extra
    return record | extra | {"replicas": [a | b for a, b in zip(record["replicas"], extra["replicas"])]}


def build_runner(cfg, status: Callable[[str], None] = lambda message: None) -> Single:
    """:class:`Single` for ``replicas: 1``, else :class:`Replicas`: every replica's simulation shares replica
    0's model and its mixing form (sparse or dense), so one program fits them all."""
    if cfg.replicas == 1:
        return Single(build_simulation(cfg, status))
    first = build_simulation(dataclasses.replace(cfg, replicas=1), status)
    form = "sparse" if first.sparse_mixing else "dense"
    sims = [first]
    for r in range(1, cfg.replicas):
        seeded = dataclasses.replace(cfg, replicas=1, seed=cfg.seed + r,
                                     topology=dataclasses.replace(cfg.topology, mixing_form=form))
        status(f"jaxdfl: building replica {r} (seed {seeded.seed})…")
        random_base = cfg.model.checkpoint == "random"
        sims.append(build_simulation(seeded, loaded=load_model(cfg.model, seeded.seed) if random_base
                                     else (first.model, first.device.base)))
    return Replicas(sims, cfg)


def _base_exact_match(sim: Simulation) -> dict | None:
    """Text runs: the frozen base's exact match per task (None for other runs)."""
    if sim.data.test_examples is None:
        return None
    from jaxdfl.sim.text_eval import exact_match_by_task

    return exact_match_by_task(sim, None, None)


def _exact_match(sim: Simulation, state: SimState, base: dict | None) -> dict:
    """Text runs: exact match of generated answers, adapted and (``base``, :func:`_base_exact_match`) base. The
    adapted answers read W as the multiple-choice evaluations do (:func:`evaluation_mixing`: no dropped
    device's expert) and come from a device still alive."""
    if base is None:
        return {}
    from jaxdfl.sim.text_eval import exact_match_by_task

    last = sim.config.rounds - 1
    w = evaluation_mixing(sim, last, state.alive)
    return {"exact_match": exact_match_by_task(sim, state, w, stored_after(sim, last)),
            "initial_exact_match": base}


def _stack(trees: list, padded: bool = False):
    """Trees with equal structure stacked on a new leading axis (``padded``: neighbour lists widened first)."""
    if padded and isinstance(trees[0], Neighbours):
        width = max(t.index.shape[-1] for t in trees)
        trees = [widen(t, width) for t in trees]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _stack_padded(indices: list[jax.Array]) -> jax.Array:
    """``[M, n_r]`` index arrays stacked ``[S, M, max n_r]``; the padding is row 0 (past each device's n)."""
    width = max(i.shape[-1] for i in indices)
    return jnp.stack([jnp.pad(i, ((0, 0), (0, width - i.shape[-1]))) for i in indices])


def _replica(tree, r: int, axis: int = 0):
    """Replica ``r``'s slice of every leaf (None stays None)."""
    return jax.tree.map(lambda a: np.take(a, r, axis) if isinstance(a, np.ndarray) else
                        jax.lax.index_in_dim(a, r, axis, keepdims=False), tree)


def _mean(rows: list[dict], std: bool = False) -> dict:
    """One dict from one per replica: numbers (and dicts of numbers) averaged over replicas, anything else
    as replica 0 has it (lists are left to the replicas), a value every replica shares as it is; the rows
    themselves (but their ``round``) under ``replicas``; with ``std``, each number's standard deviation
    under ``std``."""
    out, spread = {}, {}
    for key, value in rows[0].items():
        values = [row.get(key) for row in rows]
        if all(v == value for v in values) and not isinstance(value, list):
            out[key] = value
        elif _number(value) and all(_number(v) for v in values):
            out[key], spread[key] = float(np.mean(values)), float(np.std(values))
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in values) and \
                all(_number(x) for v in values for x in v.values()):
            out[key] = {k: float(np.mean([v[k] for v in values])) for k in value}
            spread[key] = {k: float(np.std([v[k] for v in values])) for k in value}
        elif not isinstance(value, list):
            out[key] = value
    out["replicas"] = [strict({k: v for k, v in row.items() if k != "round"}) for row in rows]
    return out | ({"std": spread} if std else {})


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
