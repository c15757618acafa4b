"""Local training of ONE device (E optimizer steps in a ``lax.scan``), and mapping a one-device function over
the device axis."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from jaxdfl.core import AdapterState, ExpertView, Method, adapter_hook
from jaxdfl.federation.attacks import flip_labels


def over_devices(fn: Callable, chunk: int = 0, carried: int = 0) -> Callable:
    """``fn(shared, mine)`` mapped over the leading device axis of every leaf of ``mine``; ``shared`` (base
    weights, test sets, experts read by everyone) is passed to every device as it is.

    ``chunk`` 0: one ``jax.vmap``. ``chunk`` > 0: groups of ``chunk`` devices one after another, each group
    vmapped: the same results, with the memory of the mapped computation (activations kept for the backward
    pass, above all) that of ``chunk`` devices instead of all of them.

    ``carried`` > 0 (with ``chunk`` > 0): ``mine`` and ``fn``'s outputs are tuples whose first ``carried``
    entries are a device's state before and after (same trees). The groups then run in a ``fori_loop`` that
    writes each group's new state over its old one, so the program holds the state once where ``lax.map``
    would stack the new state into a second buffer (10 GiB of the 27.7 GiB a round of 102,400 tiny-ViT devices
    with Adam needed).
    """
    if chunk <= 0:
        return jax.vmap(fn, in_axes=(None, 0))
    if not carried:
        return lambda shared, mine: jax.lax.map(lambda one: fn(shared, one), mine, batch_size=chunk)
    group = jax.vmap(fn, in_axes=(None, 0))

    def in_place(shared, mine):
        m = jax.tree.leaves(mine)[0].shape[0]
        state, rest = tuple(mine[:carried]), tuple(mine[carried:])
        take = lambda start, size: lambda a: jax.lax.dynamic_slice_in_dim(a, start, size)  # noqa: E731
        put = lambda start: lambda whole, part: jax.lax.dynamic_update_slice_in_dim(whole, part, start, 0)  # noqa: E731
        per_group = min(chunk, m)
        shapes = jax.eval_shape(group, shared, jax.tree.map(take(0, per_group), mine))[carried:]
        extra = jax.tree.map(lambda s: jnp.zeros((m, *s.shape[1:]), s.dtype), shapes)

        def run(start, size, carry):
            # A conditional XLA cannot fold materialises the group's old state before anything is written. With
            # the reads fused into the writes (Adam at E = 1 local step), XLA copied the whole state in every
            # group; XLA:CPU drops optimization barriers, which would say this more plainly.
            mine = jax.tree.map(take(start, size), (*carry[0], *rest))
            out = jax.lax.cond(start >= 0, lambda x: group(shared, x),
                               lambda x: jax.tree.map(jnp.zeros_like, jax.eval_shape(group, shared, x)), mine)
            return jax.tree.map(put(start), carry, (tuple(out[:carried]), tuple(out[carried:])))

        full, tail = divmod(m, per_group)
        carry = jax.lax.fori_loop(0, full, lambda i, c: run(i * per_group, per_group, c), (state, extra))
        if tail:
            carry = run(full * per_group, tail, carry)
        return (*carry[0], *carry[1])

    return in_place


def make_local_train(model_loss, method: Method, optimizer: optax.GradientTransformation, local_steps: int,
                     batch_size: int, reset_state: bool, prox_mu: float = 0.0, num_classes: int = 0):
    """Returns ``train(state, opt_state, base, x, y, index, n, key, view=None, flip=False, steps=None,
    correction=None) -> (state, opt_state, mean_loss)`` for one device, with ``model_loss(base, x, y, hook) ->
    scalar`` (an :class:`~jaxdfl.sim.objective.Objective`'s ``loss``).

    ``steps`` (a straggler's budget this round): only the first ``steps`` of the ``local_steps`` steps update
    anything (a masked scan, so every device runs one program). ``prox_mu`` > 0 adds FedProx's proximal term
    ``μ/2 ‖θ − θ_start‖²`` (Li et al. 2020, eq. 2), ``θ_start`` the params the device started the round from.
    With ``flip`` (a label-flipping attacker) the device trains on labels ``num_classes − 1 − y``.

    ``x`` ``[N, ...]``, ``y`` ``[N]`` are the training pool, ``index`` ``[n_max]`` the device's rows of it
    and ``n`` how many are real; each step draws a mini-batch of ``batch_size`` of them uniformly (with
    replacement). With a ``view`` the forward pass is the device's mixture of held experts
    (:func:`~jaxdfl.core.adapter_hook`). ``correction`` (SCAFFOLD's ``c − c_i``, a tree like the params) is
    added to every step's gradient.
    """

    def train(state: AdapterState, opt_state, base, x, y, index, n, key, view: ExpertView | None = None,
              flip=False, steps=None, correction=None):
        if reset_state:
            opt_state = optimizer.init(state.params)

        def loss_fn(params, xb, yb):
            adapter = state._replace(params=params)
            loss = model_loss(base, xb, yb, adapter_hook(method, adapter, view)) + method.regularizer(adapter)
            if prox_mu:
                loss += 0.5 * prox_mu * sum(jnp.sum((p - p0) ** 2) for p, p0 in
                                            zip(jax.tree.leaves(params), jax.tree.leaves(state.params)))
            return loss

        def step(carry, inputs):
            params, s = carry
            k, t = inputs
            idx = index[jax.random.randint(k, (batch_size,), 0, n)]
            yb = jnp.where(flip, flip_labels(y[idx], num_classes), y[idx]) if num_classes else y[idx]
            loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], yb)
            if correction is not None:  # SCAFFOLD: the step follows g − c_i + c
                grads = jax.tree.map(jnp.add, grads, correction)
            updates, new_s = optimizer.update(grads, s, params)
            new = (optax.apply_updates(params, updates), new_s)
            if steps is None:
                return new, loss
            done = t < steps  # a straggler's steps past its budget leave everything as it was
            return jax.tree.map(lambda a, b: jnp.where(done, a, b), new, (params, s)), jnp.where(done, loss, 0.0)

        ticks = (jax.random.split(key, local_steps), jnp.arange(local_steps))
        (params, opt_state), losses = jax.lax.scan(step, (state.params, opt_state), ticks)
        mean = losses.mean() if steps is None else losses.sum() / jnp.maximum(jnp.minimum(steps, local_steps), 1)
        return state._replace(params=params), opt_state, mean

    return train
