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
from jaxdfl.sim.state import RoundInputs, SimState, where_devices
from jaxdfl.federation.aggregators import robust_mix
from jaxdfl.federation.buffered import arrivals, buffered_step, job_lag
from jaxdfl.federation.privacy import central_dp_mix, local_dp
from jaxdfl.federation.secure import secure_mix
from jaxdfl.federation.scaffold import scaffold_variates
from jaxdfl.federation.server import server_step
from jaxdfl.topology.mixing import count_links, drop_columns, drop_senders, heard, mix, num_linked, row
from jaxdfl.topology.neighbours import Neighbours


class DeviceData(NamedTuple):
    """The arrays a round reads and never changes: the frozen base weights and the training pool, ``x``
    ``[N, ...]``, ``y`` ``[N]`` (both shared by every device), each device's rows of the pool, ``index``
    ``[M, n_max]`` (``n`` ``[M]`` of them real), and ``byzantine`` ``[M]`` bool, the attacking devices (None:
    no attack)."""

    base: dict
    x: jax.Array
    y: jax.Array
    index: jax.Array
    n: jax.Array
    byzantine: jax.Array | None = None


def finite_devices(loss: jax.Array, adapter) -> jax.Array:
    """``[K]`` bool: each device's loss and every leaf of its adapter are finite."""
    leaves = [jnp.isfinite(x).reshape(x.shape[0], -1).all(1) for x in jax.tree.leaves(adapter)]
    return jnp.isfinite(loss) & jnp.stack(leaves).all(0)


def make_round_step(objective: Objective, method: Method, optimizer, *, local_steps: int, batch_size: int,
                    reset_state: bool = False, covariance: bool = False, collision: bool = False,
                    channel: Channel | None = None, controller: ServerController | None = None,
                    device_chunk: int = 0, drop_nonfinite: bool = False, shifts: tuple[int, ...] | None = None,
                    mesh=None, real: int | None = None, server: bool = False, rule: Callable | None = None,
                    centre_at_start: bool = False, poison: Callable | None = None,
                    label_classes: int = 0, server_optimizer=None, prox_mu: float = 0.0,
                    dp_central: tuple[float, float, float] | None = None,
                    dp_local: tuple[float, float] | None = None, secure_bits: int = 0,
                    drop_late: bool = False, scaffold_lr: float = 0.0,
                    buffer: tuple[int, float] | None = None) -> Callable:
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

    Realistic federations (:mod:`jaxdfl.federation`; ``server``: W is a server's average, every row the same):

    * ``inputs.available`` ``[M]`` bool: offline devices neither train nor send (their state is kept; nobody
      hears them). Under a server they download the global model like everyone; device to device they hear
      nothing. A round in which a server hears nobody leaves every device as it was.
    * ``inputs.steps`` ``[M]`` int: each device's local steps this round (stragglers; at most
      ``local_steps``), a masked scan of ``local_steps``. With ``drop_late`` a device that did fewer than
      ``local_steps`` is late: treated as offline for the round (FedAvg's deadline), counted in
      ``messages_lost_late``; without, its partial work is used.
    * ``buffer`` ``(size, staleness exponent)``: FedBuff's buffered asynchronous aggregation under a server
      (:mod:`jaxdfl.federation.buffered`, its state in ``state.buffer``): a job started at ``inputs.steps``
      steps a round takes ``ceil(local_steps / steps)`` rounds of full local training; only the devices whose
      job ends this round train and upload (``messages_planned`` counts them), the rest keep the model they
      downloaded; the server buffers the arrivals' staleness-weighted updates and steps when the buffer is
      full (with ``server_optimizer`` if given). Logs ``server_steps``, ``staleness_mean``, ``buffer_updates``
      and ``in_flight``.
    * ``rule``: a robust aggregator (:func:`jaxdfl.federation.make_rule`) in place of the weighted average;
      updates are measured from each receiver's round-start params (``centre_at_start``) or from 0 (methods
      that send deltas).
    * ``data.byzantine`` ``[M]`` bool, the attacking devices: ``poison`` rewrites their messages
      (:func:`jaxdfl.federation.make_poison`), ``label_classes`` > 0 makes them train on flipped labels.
    * ``server_optimizer``: optax on the pseudo-gradient global − average (FedAvgM, FedAdam, FedYogi), its
      state in ``state.server``; ``prox_mu``: FedProx's proximal term in local training.
    * ``dp_central`` ``(clip_norm, noise_multiplier, fixed_weight)``: DP-FedAvg's clipped, noised aggregate
      replaces the server's average (``fixed_weight`` > 0: Poisson sampling's 1/(qN) per client);
      ``dp_local``: every sending device clips its update and adds noise itself
      (:mod:`jaxdfl.federation.privacy`).
    * ``scaffold_lr`` > 0 (the local learning rate η): SCAFFOLD (Karimireddy et al. 2020, option II). Local
      steps follow ``g − c_i + c``; a client that delivers sets ``c_i ← c_i − c + (x − y_i)/(K_i η)`` (K_i its
      steps) and sends the change with its update (counted in the uplink); the server moves
      ``c ← c + (1/N) Σ Δc_i`` (``state.variates``).
    * ``secure_bits`` > 0: the server sums pairwise-masked, fixed-point contributions with that many fractional
      bits (:mod:`jaxdfl.federation.secure`); the protocol's key and share messages are added to
      ``uplink_bits`` and logged as ``secagg_bits``.

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
      ``queue``, ``gamma``, ``bandwidth_min``, ``bandwidth_max``); message accounting, where
      ``messages_planned`` = ``messages_delivered`` + ``messages_lost_unavailable`` + ``messages_lost_late``
      + ``messages_lost_dropped`` + ``messages_lost_outage`` (a message is one sender → receiver link, one
      upload under a server); ``online_devices`` with ``inputs.available``; ``local_steps_mean`` (over the
      devices that trained) and ``late_devices`` with ``inputs.steps``.
    """
    local_train = make_local_train(objective.loss, method, optimizer, local_steps, batch_size, reset_state,
                                   prox_mu, label_classes)

    def train(shared, mine):
        base, x, y, experts = shared
        adapter, opt_state, index, n, key, view, flip, steps, correction = mine
        return local_train(adapter, opt_state, base, x, y, index, n, key,
                           None if view is None else view._replace(experts=experts), flip, steps, correction)

    train_all = over_devices(train, device_chunk, carried=2)  # a device's adapter and optimizer state
    through_experts = method.experts is not None and method.experts.train_through

    def round_step(state: SimState, data: DeviceData, inputs: RoundInputs):
        w, active, control, available = inputs.w, inputs.active, inputs.control, inputs.available
        m = jax.tree.leaves(state.adapter)[0].shape[0]
        is_real = jnp.arange(m) < (m if real is None else real)
        steps = inputs.steps
        if buffer is not None:  # FedBuff: the devices whose job ends this round train and deliver, whole
            due, available = arrivals(state.buffer, job_lag(steps, local_steps, m))
            available &= is_real
            steps, w = None, drop_columns(w, available)
        planned, online_only = w, None
        if steps is not None and drop_late:  # a late device misses the deadline: offline for the round
            online_only = jnp.ones(steps.shape, bool) if available is None else available
            available = online_only & (steps >= local_steps)
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
        mine = (*part, pick(data.index), pick(data.n), jax.random.split(k_train, k), view,
                pick(data.byzantine) if label_classes else None,
                None if steps is None else pick(steps),
                None if not scaffold_lr else jax.tree.map(lambda ci, c: pick(c - ci), state.variates.client,
                                                          state.variates.server))
        adapter, opt_state, loss = train_all((data.base, data.x, data.y, experts), mine)
        trained = adapter.params
        finite = finite_devices(loss, adapter)
        if active is not None:
            finite = jnp.ones(m, bool).at[active].set(finite)
        counts = jnp.ones(k, bool) if real is None or active is not None else jnp.arange(k) < real
        online = None if available is None else pick(available)
        if online is not None:  # an offline device trained in the program, but nobody will count or hear it
            counts &= online
            w = drop_columns(w, available) if server else drop_senders(w, available)
        reachable = w
        if online_only is not None:  # offline first, then late
            online_w = (drop_columns(planned, online_only) if server else drop_senders(planned, online_only))
        alive = state.alive
        if drop_nonfinite:  # a dropped device is zeroed (finite, inert: 0 × NaN would still be NaN) and unheard
            alive = alive & finite
            w = drop_senders(w, alive)
            counted = (alive if active is None else alive[active]) & counts
            inert = lambda v: jnp.where(counted.reshape(-1, *[1] * (v.ndim - 1)), v, jnp.zeros_like(v))  # noqa: E731
            adapter, opt_state = jax.tree.map(inert, (adapter, opt_state))
            loss_mean = jnp.where(counted, loss, 0.0).sum() / jnp.maximum(counted.sum(), 1)
            metrics["dropped_devices"] = (~alive[:real]).sum()
        elif real is None and online is None:
            loss_mean = loss.mean()
        else:
            loss_mean = jnp.where(counts, loss, 0.0).sum() / jnp.maximum(counts.sum(), 1)
        metrics |= {"finite": finite[:real], "nonfinite_devices": (~finite[:real]).sum()}
        message, adapter = jax.vmap(method.encode, in_axes=(0, 0, 0, None))(
            adapter, part[0].params, jax.random.split(k_encode, k), control)
        if dp_local is not None:  # each device clips and noises its own update
            centre = part[0].params if centre_at_start else None
            noised = jax.vmap(lambda v, c, key: local_dp(v, c, key, *dp_local))(
                message.values, centre, jax.random.split(jax.random.fold_in(k_encode, 2), k))
            message = message._replace(values=noised)
        if poison is not None:  # Byzantine devices rewrite what they send
            centre = part[0].params if centre_at_start else None
            poisoned = jax.vmap(poison)(message.values, centre,
                                        jax.random.split(jax.random.fold_in(k_encode, 1), k))
            message = message._replace(values=where_devices(pick(data.byzantine), poisoned, message.values))
        if online is not None:  # offline devices keep their round-start state
            adapter, opt_state = where_devices(online, (adapter, opt_state), part)
        if active is not None:  # scatter back; inactive devices send an all-zero message with zero weight
            adapter, opt_state = jax.tree.map(lambda full, sub: full.at[active].set(sub),
                                              (state.adapter, state.opt_state), (adapter, opt_state))
            message = jax.tree.map(lambda sub: jnp.zeros((m, *sub.shape[1:]), sub.dtype).at[active].set(sub), message)
        # an exchange round: every device also hands its expert to every device of the other clusters (a
        # topology with exchanges is dense; neighbour lists never have one)
        crossing = None if sparse else (w == 0) & jnp.asarray(control.exchange)  # [receiver, sender]
        if drop_nonfinite and not sparse:
            crossing &= alive[None, :]
        if available is not None and not sparse:
            crossing &= available[None, :] & available[:, None]
        on_time = planned if available is None else online_w if online_only is not None else reachable
        lost = {"messages_planned": count_links(planned, server),
                "messages_lost_unavailable": count_links(planned, server) - count_links(on_time, server),
                "messages_lost_late": count_links(on_time, server) - count_links(reachable, server),
                "messages_lost_dropped": count_links(reachable, server) - count_links(w, server)}
        if channel is not None:  # the one-off setup part of a message is not bound by the round's Γ
            w, report = channel.apply(k_fade, w, message.bits - message.setup_bits, crossing, inputs.positions)
            metrics |= report
            lost |= {"messages_lost_outage": report["outages"], "messages_delivered": report["delivered"]}
        else:
            lost |= {"messages_lost_outage": jnp.zeros((), jnp.int32), "messages_delivered": count_links(w, server)}
        metrics |= lost
        if secure_bits:
            mixed, extra = secure_mix(planned, w, message, jax.random.fold_in(k_encode, 4), secure_bits)
            metrics |= extra
        elif dp_central is not None:
            clip_norm, noise_multiplier, fixed_weight = dp_central
            mixed = central_dp_mix(w, message, state.adapter.params if centre_at_start else None, clip_norm,
                                   noise_multiplier, jax.random.fold_in(k_encode, 3), fixed_weight)
        elif rule is None:
            mixed = mix(w, message, shifts, mesh)
        else:
            mixed = robust_mix(rule, w, message, state.adapter.params if centre_at_start else None, server)
        adapter = jax.vmap(method.merge, in_axes=(0, 0, None))(adapter, mixed, control)
        server_state = state.server
        if available is not None:  # who heard nobody keeps its round-start state
            deaf = jnp.broadcast_to(count_links(w, True) == 0, (m,)) if server else ~available
            adapter, opt_state = where_devices(~deaf, (adapter, opt_state), (state.adapter, state.opt_state))
        if inputs.available is not None:
            metrics["online_devices"] = inputs.available[:real].sum()
        if steps is not None:  # over the online devices that trained this round
            trains = jnp.ones(m, bool) if active is None else jnp.zeros(m, bool).at[active].set(True)
            trains &= jnp.ones(m, bool) if inputs.available is None else inputs.available
            trains &= jnp.arange(m) < (m if real is None else real)
            metrics["local_steps_mean"] = jnp.where(trains, steps, 0).sum() / jnp.maximum(trains.sum(), 1)
            metrics["late_devices"] = (trains & (steps < local_steps)).sum()
        if buffer is not None:  # each arrival's update from the model it downloaded, weighted as in FedAvg
            updates = jax.tree.map(lambda v, x: v - x, message.values, part[0].params) if centre_at_start \
                else message.values
            buffer_state, server_state, record = buffered_step(
                state.buffer, due, available, updates, row(inputs.w, 0), *buffer, server_optimizer, state.server)
            metrics |= record  # who delivered downloads the global model; the rest keep what they train from
            adapter = adapter._replace(params=where_devices(available, jax.tree.map(
                lambda p, g: jnp.broadcast_to(g, p.shape).astype(p.dtype), adapter.params,
                buffer_state.global_params), part[0].params))
        elif server_optimizer is not None:  # one step on the pseudo-gradient, the same for every device
            first = 0 if state.alive is None else jnp.argmax(alive)
            start, averaged = (jax.tree.map(lambda p: p[first], t) for t in (state.adapter.params, adapter.params))
            stepped, stepped_state = server_step(server_optimizer, state.server, start, averaged)
            heard_any = count_links(w, True) > 0
            new_global = jax.tree.map(lambda a, b: jnp.where(heard_any, a, b), stepped, start)
            server_state = jax.tree.map(lambda a, b: jnp.where(heard_any, a, b), stepped_state, state.server)
            adapter = adapter._replace(params=jax.tree.map(lambda p, g: jnp.broadcast_to(g, p.shape).astype(p.dtype),
                                                           adapter.params, new_global))
        transmits = heard(w) if sparse else heard(w) | jnp.any(crossing, axis=0)
        charged = lambda total, setup: jnp.sum(  # noqa: E731
            jnp.where(transmits, total - setup, 0) + jnp.where(is_real, setup, 0))
        if real is not None:  # the inert padding keeps its state: it never trains
            keep = lambda new, old: jnp.where(is_real.reshape(-1, *[1] * (new.ndim - 1)), new, old)  # noqa: E731
            adapter, opt_state = jax.tree.map(keep, (adapter, opt_state), (state.adapter, state.opt_state))
        metrics |= {"train_loss": loss_mean, "device_loss": loss if active is not None else loss[:real],
                    "uplink_params": charged(message.count, message.setup_count),
                    "uplink_bits": charged(message.bits, message.setup_bits) + metrics.get("secagg_bits", 0.0),
                    "senders": transmits.sum()}
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
        variates = state.variates
        if scaffold_lr:
            variates, sent = scaffold_variates(state.variates, part[0].params, trained, scaffold_lr, w, active,
                                                local_steps if steps is None else pick(steps), real)
            metrics["uplink_params"] += sent
            metrics["uplink_bits"] += 32.0 * sent
        return SimState(adapter, opt_state, controller_state, alive, server_state, variates,
                        buffer_state if buffer is not None else state.buffer), metrics

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
