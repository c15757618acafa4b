"""The round program: local training (vmapped) → encode → the channel → mixing → merge, for every device at
once; and :func:`run_rounds`, a ``lax.scan`` of rounds in one XLA program.

Everything that changes from round to round (the mixing matrix, the sampled clients, keys, flags, positions)
is an input (:class:`~jaxdfl.sim.state.RoundInputs`), so rounds need no recompilation, run as a scan, and can
be differentiated with respect to any of them.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxdfl.control.server import ServerController
from jaxdfl.core import Method, expert_views
from jaxdfl.metrics import lora_covariance, neighbourhood_collision, neighbourhood_collision_rate
from jaxdfl.network.channels import Channel
from jaxdfl.sim.local import make_local_train, over_devices
from jaxdfl.sim.objective import Objective
from jaxdfl.sim.state import RoundInputs, SimState
from jaxdfl.topology.mixing import drop_senders, heard, mix, num_linked, row
from jaxdfl.topology.neighbours import Neighbours


class DeviceData(NamedTuple):
    """The arrays a round reads and never changes: the frozen base weights and the training pool, ``x``
    ``[N, ...]``, ``y`` ``[N]`` (both shared by every device), and each device's rows of the pool, ``index``
    ``[M, n_max]`` (``n`` ``[M]`` of them real)."""

    base: dict
    x: jax.Array
    y: jax.Array
    index: jax.Array
    n: jax.Array


def finite_devices(loss: jax.Array, adapter) -> jax.Array:
    """``[K]`` bool: each device's loss and every leaf of its adapter are finite."""
    leaves = [jnp.isfinite(x).reshape(x.shape[0], -1).all(1) for x in jax.tree.leaves(adapter)]
    return jnp.isfinite(loss) & jnp.stack(leaves).all(0)


def make_round_step(objective: Objective, method: Method, optimizer, *, local_steps: int, batch_size: int,
                    reset_state: bool = False, covariance: bool = False, collision: bool = False,
                    channel: Channel | None = None, controller: ServerController | None = None,
                    device_chunk: int = 0, drop_nonfinite: bool = False, shifts: tuple[int, ...] | None = None,
                    mesh=None, real: int | None = None) -> Callable:
    """``round_step(state, data: DeviceData, inputs: RoundInputs) -> (state, metrics)`` for all devices.

    Only the active devices (``inputs.active``, all when None) train and ``encode``, so an inactive device's
    optimizer state and method memory carry over untouched and the compute is K/M of a full round; inactive
    devices send an all-zero message with zero weight. Every device then ``merge``s what it receives. With a
    ``controller`` (TSFA/OSFA) the program first decides the round's ratio from ``state.controller`` (the
    delay queue). With a ``channel`` (:mod:`jaxdfl.network.channels`), its ``apply`` turns the planned W into
    the delivered one before mixing (a run: this round's fading, minimum powers and outages). On an
    exchange round every device also hands its expert to every device it gives zero weight (other clusters).

    With ``drop_nonfinite``, a device whose loss or adapter turns non-finite in local training is dropped for
    good (``state.alive``): its adapter and optimizer state are zeroed, nobody receives from it again
    (:func:`drop_senders`), and the losses of devices still alive make ``train_loss``.

    ``shifts``: W comes as neighbour lists of a circulant graph in shift order, mixed by shifts of the device
    axis (``ppermute`` between the chips of ``mesh``; :mod:`jaxdfl.topology.circulant`).

    ``real``: only the first ``real`` devices are real; the rest are inert padding (:mod:`jaxdfl.sim.padding`,
    W gives them only themselves): their state is kept as it was, and no metric counts them.

    ``metrics`` (every entry a scalar unless noted; :func:`jaxdfl.sim.run.run` logs every scalar):
      ``train_loss`` mean local loss over active devices; ``device_loss`` ``[K]``; ``finite`` ``[M]`` bool
      and ``nonfinite_devices`` (how many devices' loss or adapter went non-finite in local training);
      ``dropped_devices`` (``drop_nonfinite``: how many are dropped by the end of the round); ``uplink_params``,
      ``uplink_bits`` summed over transmitting devices (a device transmits when another gives it weight, or
      on an exchange; a message's one-off setup part is charged whenever it appears); ``senders``;
      ``covariance_fro`` (``covariance=True``: B(12) over the active devices' trained factors, weighted by
      row 0 of W); ``collision_empirical``, ``collision_analytic`` (``collision=True``,
      :func:`~jaxdfl.metrics.neighbourhood_collision` of the sent masks, a dense message holding every
      position); with a channel the :class:`~jaxdfl.network.d2d.LinkReport` fields (``energy_j`` including
      the exchange) and ``exchange_delay_s``; with a controller its record (``ratio``, ``delay_s``,
      ``queue``, ``gamma``, ``bandwidth_min``, ``bandwidth_max``).
    """
    local_train = make_local_train(objective.loss, method, optimizer, local_steps, batch_size, reset_state)

    def train(shared, mine):
        base, x, y, experts = shared
        adapter, opt_state, index, n, key, view = mine
        return local_train(adapter, opt_state, base, x, y, index, n, key,
                           None if view is None else view._replace(experts=experts))

    train_all = over_devices(train, device_chunk)
    through_experts = method.experts is not None and method.experts.train_through

    def round_step(state: SimState, data: DeviceData, inputs: RoundInputs):
        w, active, control = inputs.w, inputs.active, inputs.control
        m = jax.tree.leaves(state.adapter)[0].shape[0]
        sparse = isinstance(w, Neighbours)
        metrics = {}
        controller_state = state.controller
        if controller is not None:
            ratio, record, controller_state = controller.decide(state.controller, inputs.round, active)
            control = control._replace(ratio=ratio)
            metrics |= record
        pick = (lambda a: a) if active is None else (lambda a: a[active])
        part = jax.tree.map(pick, (state.adapter, state.opt_state))
        k = jax.tree.leaves(part)[0].shape[0]
        k_train, k_encode, k_fade = jax.random.split(inputs.key, 3)
        view, experts = None, None
        if through_experts:
            view = expert_views(jax.vmap(method.experts.expert)(state.adapter), w, control.stored)
            view, experts = jax.tree.map(pick, view._replace(experts=None)), view.experts
        mine = (*part, pick(data.index), pick(data.n), jax.random.split(k_train, k), view)
        adapter, opt_state, loss = train_all((data.base, data.x, data.y, experts), mine)
        trained = adapter.params
        finite = finite_devices(loss, adapter)
        if active is not None:
            finite = jnp.ones(m, bool).at[active].set(finite)
        counts = jnp.ones(k, bool) if real is None or active is not None else jnp.arange(k) < real
        alive = state.alive
        if drop_nonfinite:  # a dropped device is zeroed (finite, inert: 0 × NaN would still be NaN) and unheard
            alive = alive & finite
            w = drop_senders(w, alive)
            counted = (alive if active is None else alive[active]) & counts
            inert = lambda v: jnp.where(counted.reshape(-1, *[1] * (v.ndim - 1)), v, jnp.zeros_like(v))  # noqa: E731
            adapter, opt_state = jax.tree.map(inert, (adapter, opt_state))
            loss_mean = jnp.where(counted, loss, 0.0).sum() / jnp.maximum(counted.sum(), 1)
            metrics["dropped_devices"] = (~alive[:real]).sum()
        else:
            loss_mean = loss.mean() if real is None else jnp.where(counts, loss, 0.0).sum() / counts.sum()
        metrics |= {"finite": finite[:real], "nonfinite_devices": (~finite[:real]).sum()}
        message, adapter = jax.vmap(method.encode, in_axes=(0, 0, 0, None))(
            adapter, part[0].params, jax.random.split(k_encode, k), control)
        if active is not None:  # scatter back; inactive devices send an all-zero message with zero weight
            adapter, opt_state = jax.tree.map(lambda full, sub: full.at[active].set(sub),
                                              (state.adapter, state.opt_state), (adapter, opt_state))
            message = jax.tree.map(lambda sub: jnp.zeros((m, *sub.shape[1:]), sub.dtype).at[active].set(sub), message)
        # an exchange round: every device also hands its expert to every device of the other clusters (a
        # topology with exchanges is dense; neighbour lists never have one)
        crossing = None if sparse else (w == 0) & jnp.asarray(control.exchange)  # [receiver, sender]
        if drop_nonfinite and not sparse:
            crossing &= alive[None, :]
        if channel is not None:  # the one-off setup part of a message is not bound by the round's Γ
            w, report = channel.apply(k_fade, w, message.bits - message.setup_bits, crossing, inputs.positions)
            metrics |= report
        adapter = jax.vmap(method.merge, in_axes=(0, 0, None))(adapter, mix(w, message, shifts, mesh), control)
        transmits = heard(w) if sparse else heard(w) | jnp.any(crossing, axis=0)
        is_real = jnp.arange(m) < (m if real is None else real)
        charged = lambda total, setup: jnp.sum(  # noqa: E731
            jnp.where(transmits, total - setup, 0) + jnp.where(is_real, setup, 0))
        if real is not None:  # the inert padding keeps its state: it never trains
            keep = lambda new, old: jnp.where(is_real.reshape(-1, *[1] * (new.ndim - 1)), new, old)  # noqa: E731
            adapter, opt_state = jax.tree.map(keep, (adapter, opt_state), (state.adapter, state.opt_state))
        metrics |= {"train_loss": loss_mean, "device_loss": loss if active is not None else loss[:real],
                    "uplink_params": charged(message.count, message.setup_count),
                    "uplink_bits": charged(message.bits, message.setup_bits), "senders": transmits.sum()}
        share = 1.0 if real is None else m / real  # an inert device hears only itself: it adds 0 to each mean
        if collision and message.mask is None:  # a dense message holds every position: a device's set
            overlap = jnp.mean(num_linked(w) >= 2) * share  # collides everywhere once it holds two messages
            metrics["collision_empirical"] = metrics["collision_analytic"] = overlap
        elif collision:
            metrics["collision_empirical"] = neighbourhood_collision(w, message.mask) * share
            metrics["collision_analytic"] = neighbourhood_collision_rate(w, message.mask) * share
        if covariance:
            first = row(w, 0)
            metrics["covariance_fro"] = lora_covariance(trained, first if active is None else first[active])
        return SimState(adapter, opt_state, controller_state, alive), metrics

    return round_step


def run_rounds(round_step: Callable, state: SimState, data: DeviceData, inputs: RoundInputs):
    """Rounds ``inputs`` (stacked ``[R, ...]``) one after another in one ``lax.scan``:
    ``-> (state after the last round, metrics stacked [R, ...])``."""
    m, r = jax.tree.leaves(state.adapter)[0].shape[0], inputs.round.shape[0]
    if isinstance(inputs.w, Neighbours):
        chex.assert_shape(list(inputs.w), (r, m, None))
    else:
        chex.assert_shape(inputs.w, (r, m, m))
    return jax.lax.scan(lambda s, one: round_step(s, data, one), state, inputs)
