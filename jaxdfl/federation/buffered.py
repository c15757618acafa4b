"""Buffered asynchronous aggregation (FedBuff: Nguyen et al. 2022, "Federated Learning with Buffered
Asynchronous Aggregation", Alg. 1), simulated exactly in the round program.

A round is the time a full-speed device takes for its E local steps. A device that starts a job downloads the
global model x^(v) (server version v) and trains E steps from it; at the pace drawn for that round (the
stragglers' ``ceil(E·u)`` steps a round) the job takes ``ceil(E / steps)`` rounds, and its update
Δ_i = y_i − x^(v) arrives at the end of the last one. The server adds each arrival to a buffer,

    total += p_i (1 + τ_i)^−a Δ_i,      weight += p_i,      τ_i = v_now − v_i (server steps missed),

with p_i the device's weight in FedAvg's average (its data share), and once the buffer holds ``size`` updates
it steps ``x ← x + total / weight`` (or a server optimizer on that pseudo-gradient) and empties. With uniform
p this is FedBuff's Δ̄ = (1/K) Σ s(τ_i) Δ_i, s(τ) = (1 + τ)^−a. A round's arrivals all enter the buffer before
it is checked, so one step may hold more than ``size`` updates. A device whose update arrived downloads the
current global model and starts its next job the following round. With every job one round long and
``size`` ≤ the devices, every round is one step of FedAvg.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxdfl.federation.server import server_step


class Buffer(NamedTuple):
    """The server's side of FedBuff and each device's job.

    Attributes:
      global_params: the global model x, one copy of the params.
      total: the buffer, Σ p_i s(τ_i) Δ_i over the updates it holds (one copy of the params).
      weight: Σ p_i over the updates it holds (float32 scalar).
      count: the updates it holds (int32 scalar).
      version: v, the server steps so far (int32 scalar).
      started: ``[M]`` int32, the version each device downloaded for its current job.
      due: ``[M]`` int32, rounds until a device's update arrives (0: this round; −1: idle, it starts a job
        from the global model it holds at the next round).
    """

    global_params: dict
    total: dict
    weight: jax.Array
    count: jax.Array
    version: jax.Array
    started: jax.Array
    due: jax.Array


def initial_buffer(global_params: dict, num_devices: int) -> Buffer:
    """An empty buffer at version 0 around ``global_params`` (one copy); every device idle."""
    return Buffer(global_params, jax.tree.map(jnp.zeros_like, global_params), jnp.zeros((), jnp.float32),
                  jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32), jnp.zeros(num_devices, jnp.int32),
                  -jnp.ones(num_devices, jnp.int32))


def job_lag(steps: jax.Array | None, local_steps: int, num_devices: int) -> jax.Array:
    """``[M]`` int32: the rounds beyond this one that a job started now takes, ``ceil(E / steps) − 1`` at
    ``steps`` ``[M]`` local steps a round (None: every device at full speed, 0)."""
    if steps is None:
        return jnp.zeros(num_devices, jnp.int32)
    return (jnp.ceil(local_steps / jnp.maximum(steps, 1)) - 1).astype(jnp.int32)


def arrivals(buffer: Buffer, lag: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(due [M], arriving [M] bool)`` at the start of a round: idle devices start a job of ``lag`` extra
    rounds; the devices whose job ends this round train now (from the model they downloaded) and deliver."""
    due = jnp.where(buffer.due < 0, lag, buffer.due)
    return due, due == 0


def buffered_step(buffer: Buffer, due: jax.Array, arriving: jax.Array, updates, weights: jax.Array, size: int,
                  exponent: float, optimizer: optax.GradientTransformation | None = None, opt_state=()):
    """The server after a round's arrivals: ``(buffer, optimizer state, metrics)``.

    ``updates``: every device's Δ_i, leaves ``[M, ...]`` (read where ``arriving`` ``[M]``); ``weights`` ``[M]``,
    p_i. The returned buffer holds the new global model and, for the devices that delivered, their download of
    it (``started``) and ``due`` −1; the other devices' ``due`` counts down. ``metrics``: ``server_steps`` (v after
    the round), ``staleness_mean`` (mean τ of the arrivals), ``buffer_updates`` (held after the round) and
    ``in_flight`` (jobs still running)."""
    tau = buffer.version - buffer.started
    scale = jnp.where(arriving, weights * (1.0 + tau) ** -exponent, 0.0)
    def add(t, d):  # a device not arriving may hold anything (even non-finite): it never enters the sum
        d = jnp.where(arriving.reshape(-1, *[1] * (d.ndim - 1)), d, 0.0)
        return t + jnp.tensordot(scale, d, axes=1).astype(t.dtype)

    total = jax.tree.map(add, buffer.total, updates)
    weight = buffer.weight + jnp.where(arriving, weights, 0.0).sum()
    count = buffer.count + arriving.sum()
    flush = count >= size
    averaged = jax.tree.map(lambda x, t: x + t / jnp.where(weight > 0, weight, 1.0), buffer.global_params, total)
    if optimizer is None:
        stepped, stepped_state = averaged, opt_state
    else:
        stepped, stepped_state = server_step(optimizer, opt_state, buffer.global_params, averaged)
    pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(flush, a, b), new, old)  # noqa: E731
    empty = jax.tree.map(jnp.zeros_like, total)
    version = buffer.version + flush.astype(jnp.int32)
    new = Buffer(pick(stepped, buffer.global_params), pick(empty, total), jnp.where(flush, 0.0, weight),
                 jnp.where(flush, 0, count), version, jnp.where(arriving, version, buffer.started),
                 jnp.where(arriving, -1, due - 1))
    metrics = {"server_steps": version, "buffer_updates": new.count, "in_flight": (new.due >= 0).sum(),
               "staleness_mean": jnp.where(arriving, tau, 0).sum() / jnp.maximum(arriving.sum(), 1)}
    return new, pick(stepped_state, opt_state), metrics


def with_global(adapter, buffer: Buffer):
    """``adapter`` (leaves ``[M, ...]``) with device 0's params replaced by the global model: what a server
    run evaluates."""
    return adapter._replace(params=jax.tree.map(lambda p, g: p.at[0].set(g.astype(p.dtype)), adapter.params,
                                                buffer.global_params))


def buffer_sharding(on_devices, everywhere) -> Buffer:
    """How a :class:`Buffer` lies on the mesh: the per-device jobs split over the device axis, the rest on
    every chip."""
    return Buffer(everywhere, everywhere, everywhere, everywhere, everywhere, on_devices, on_devices)
