"""A built simulation as a pure, jittable, differentiable function of a design: what devices learn after R
rounds, as a function of who mixes with whom, where they stand, and what power and bandwidth they use."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdfl.core import adapter_hook, expert_views
from jaxdfl.diff.design import LEARNABLE, link_entropy, masked_softmax, mixing_matrix, place, transmit_power, unplace
from jaxdfl.errors import ConfigError, warn
from jaxdfl.network.channels import ExpectedChannel
from jaxdfl.network.d2d import LinkBudget, trajectory
from jaxdfl.sim.build import Simulation
from jaxdfl.sim.round import DeviceData, run_rounds


class Validation(NamedTuple):
    """Each device's held-out examples: ``x`` ``[M, v_max, ...]``, ``y`` ``[M, v_max]``, ``n`` ``[M]``."""

    x: jax.Array
    y: jax.Array
    n: jax.Array


def split_validation(sim: Simulation, fraction: float, seed: int) -> tuple[DeviceData, Validation]:
    """Hold out ``fraction`` of each device's training examples (at least one): the training set keeps the
    rest (local batches are drawn from the first ``n`` rows of ``index`` only), the validation set scores
    designs. The test sets stay untouched, for judging a learned design by retraining."""
    data, rng = sim.data, np.random.default_rng([seed, 7])
    index = np.array(data.index)
    held = np.maximum(1, np.floor(fraction * data.n)).astype(np.int32)
    rows = np.zeros((len(index), held.max()), np.int32)
    for i, (n, v) in enumerate(zip(data.n, held)):
        order = rng.permutation(n)
        rows[i, :v] = index[i, order[:v]]
        index[i, :n - v] = index[i, order[v:]].copy()
    x_val = np.where((np.arange(held.max()) < held[:, None]).reshape(*rows.shape, *[1] * (data.pool_x.ndim - 1)),
                     data.pool_x[rows], 0).astype(data.pool_x.dtype)
    placed = jax.device_put((index, data.n - held), sim.device.index.sharding)
    return (DeviceData(sim.device.base, sim.device.x, sim.device.y, *placed, sim.device.byzantine),
            Validation(*jax.device_put((x_val, data.pool_y[rows], held))))


def validation_scores(sim: Simulation, state, val: Validation, w, stored, target: str):
    """``(loss, accuracy)``, each ``[M]``: every device's cross-entropy and accuracy on its own validation
    examples (``target="own"``) or on every device's (``"all"``), answering as it would at evaluation."""
    method, objective, base = sim.method, sim.objective, sim.device.base
    views = None
    if method.experts is not None:
        views = expert_views(jax.vmap(method.experts.expert)(state.adapter), w, stored)

    def one(adapter, view, x, y, n):
        if view is not None:
            view = view._replace(experts=views.experts)
        scores = objective.scores(base, x, adapter_hook(method, adapter, view))
        valid = jnp.arange(y.shape[0]) < n
        ce = optax.softmax_cross_entropy_with_integer_labels(scores, y)
        return (jnp.where(valid, ce, 0.0).sum() / n,
                jnp.where(valid, scores.argmax(-1) == y, False).sum() / n)

    mine = None if views is None else views._replace(experts=None)
    if target == "own":
        return jax.vmap(one)(state.adapter, mine, val.x, val.y, val.n)
    every = jax.vmap(jax.vmap(one, in_axes=(None, None, 0, 0, 0)), in_axes=(0, 0, None, None, None))
    loss, acc = every(state.adapter, mine, val.x, val.y, val.n)  # [device, whose examples]
    return loss.mean(1), acc.mean(1)


COSTS = ("energy_j", "uplink_bits", "link_entropy", "outages")


def outcome(sim: Simulation, rounds: int = 10, learn=("mixing",), *, target: str = "own", mixing: str = "softmax",
            candidates: str = "complete", weights: dict | None = None, validation: float = 0.2,
            remat: bool = True) -> tuple[dict, Callable]:
    """``(design, fn)``: the initial design (a dict of arrays, one per learned kind) and the pure function
    ``fn(design, key) -> (value, aux)`` of a rollout of ``rounds`` rounds from the config's initial state.

    Args:
      sim: a built simulation; whatever ``learn`` leaves out comes from its config, as a run would have it.
      learn: any of ``"mixing"`` (logits over ``candidates``), ``"power"`` and ``"bandwidth"`` (each device's
        total power and its band's shares over its links), ``"positions"`` (inside the network's disk, see
        :mod:`jaxdfl.diff.design`); the last three act through the device-to-device network with the sampled
        outages replaced by their expectation (:class:`~jaxdfl.network.channels.ExpectedChannel`), with the
        parameters of the config's ``network`` section (even when ``network.name`` is none: a warning says so).
      target: the validation loss of each device on its own held-out examples (``"own"``, the default: what
        each device came to learn) or on every device's (``"all"``), averaged over devices.
      mixing: ``"softmax"`` (row-stochastic, the default) or ``"sinkhorn"`` (doubly stochastic).
      candidates: the links mixing may use: ``"complete"`` (every pair) or ``"topology"`` (the config's).
      weights: penalty weights of :data:`COSTS` (0 by default): energy (J), uplink bits, link entropy (mean
        row entropy of W), expected lost links; all summed over the rollout.
      validation: the share of each device's training examples held out to score designs.
      remat: recompute each round's activations in the backward pass (``jax.checkpoint``), so memory holds
        one round's activations instead of R.

    ``value`` = mean validation loss + Σ weight·cost; ``aux`` holds ``validation_loss``,
    ``validation_accuracy``, every cost, ``device_loss`` ``[M]`` and the final ``w``.
    """
    cfg = sim.config
    unknown = [k for k in learn if k not in LEARNABLE]
    if unknown or not learn:
        raise ConfigError(f"study.learn: got {list(learn)}; choose from {list(LEARNABLE)}")
    wireless = [k for k in learn if k != "mixing"]
    weights = {k: 0.0 for k in COSTS} | dict(weights or {})
    data, val = split_validation(sim, validation, cfg.seed)
    plan = sim.inputs(0, rounds, dense=True)  # designs are dense [M, M]
    net = cfg.network
    if wireless and plan.positions is None:  # no network in the config: its network section's parameters
        warn(f"learning {', '.join(wireless)} through the device-to-device network of the config's network "
             f"section (network.name is {net.name!r}): {net.radius:g} m disk, p_max {net.power_max:g} W")
        where = trajectory(cfg.num_devices, net.radius, net.move_std, cfg.seed)
        plan = plan._replace(positions=np.stack([where(r) for r in range(rounds)]))
    stored = float(sim.topology.control(rounds).stored)
    m = cfg.num_devices
    cand = np.ones((m, m), bool) if candidates == "complete" else np.asarray(plan.w[0] != 0)
    state0 = sim.init_fn(jax.random.fold_in(jax.random.key(cfg.seed), 0))
    budget = LinkBudget(net.bandwidth, net.delay_bound, net.power_max, net.noise, net.path_loss_exp)
    design = {"mixing": jnp.zeros((m, m)), "power": jnp.zeros(m), "bandwidth": jnp.zeros((m, m)),
              "positions": None if plan.positions is None else unplace(jnp.asarray(plan.positions[0], float), net.radius)}
    design = {k: design[k] for k in learn}

    def fn(design, key):
        w = mixing_matrix(design["mixing"], jnp.asarray(cand), mixing) if "mixing" in learn else None
        inputs = plan._replace(key=jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(rounds)),
                               w=jnp.broadcast_to(w, plan.w.shape) if w is not None else jnp.asarray(plan.w))
        step = sim.round_step
        if wireless:
            positions = None if "positions" not in design else place(design["positions"], net.radius)
            if positions is not None:
                inputs = inputs._replace(positions=jnp.broadcast_to(positions, plan.positions.shape))
            planned = (inputs.w[0] * (1 - jnp.eye(m))).T != 0  # [sender, receiver]
            shares = masked_softmax(design["bandwidth"], planned) if "bandwidth" in design else None
            power = transmit_power(design["power"], net.power_max) if "power" in design else None
            step = sim.make_round(channel=ExpectedChannel(budget, net.min_distance, power, shares, positions))
        one_round = jax.checkpoint(step) if remat else step
        state, metrics = run_rounds(one_round, state0, data, inputs)
        loss, acc = validation_scores(sim, state, val, inputs.w[-1], stored, target)
        costs = {"energy_j": jnp.sum(metrics.get("energy_j", jnp.zeros(rounds))),
                 "uplink_bits": jnp.sum(metrics["uplink_bits"]),
                 "link_entropy": link_entropy(inputs.w[-1]) * rounds,
                 "outages": jnp.sum(metrics.get("outages", jnp.zeros(rounds)))}
        value = loss.mean() + sum(weights[k] * costs[k] for k in COSTS)
        return value, {"validation_loss": loss.mean(), "validation_accuracy": acc.mean(), "device_loss": loss,
                       "w": inputs.w[-1], **costs}

    return design, fn
