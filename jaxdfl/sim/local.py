"""Local training of ONE device: E optimizer steps in a ``lax.scan`` (the engine vmaps it over devices)."""

from __future__ import annotations

import jax
import optax

from jaxdfl.adapters.base import AdapterState, ExpertView, Method


def adapter_hook(method: Method, state: AdapterState, view: ExpertView | None = None):
    """The hook that attaches this device's adapter to the base model: ``method.delta``, or with an
    :class:`ExpertView` ``method.infer`` (the mixture of every expert the device holds)."""
    if view is None:
        return lambda name, h: method.delta(state, name, h)
    return lambda name, h: method.infer(state, name, h, view)


def make_local_train(model_loss, method: Method, optimizer: optax.GradientTransformation, local_steps: int,
                     batch_size: int, reset_state: bool):
    """Returns ``train(state, opt_state, base, x, y, n, key, view=None) -> (state, opt_state, mean_loss)`` for
    one device, with ``model_loss(base, x, y, hook) -> scalar`` (an :class:`~jaxdfl.sim.objective.Objective`'s
    ``loss``).

    ``x`` ``[n_max, ...]``, ``y`` ``[n_max]`` are the device's padded data and ``n`` its real size; each
    step draws a mini-batch of ``batch_size`` indices uniformly from ``[0, n)``. With a ``view`` the forward
    pass is the device's mixture of held experts (:func:`adapter_hook`).
    """

    def train(state: AdapterState, opt_state, base, x, y, n, key, view=None):
        if reset_state:
            opt_state = optimizer.init(state.params)

        def loss_fn(params, xb, yb):
            adapter = state._replace(params=params)
            return model_loss(base, xb, yb, adapter_hook(method, adapter, view)) + method.regularizer(adapter)

        def step(carry, k):
            params, s = carry
            idx = jax.random.randint(k, (batch_size,), 0, n)
            loss, grads = jax.value_and_grad(loss_fn)(params, x[idx], y[idx])
            updates, s = optimizer.update(grads, s, params)
            return (optax.apply_updates(params, updates), s), loss

        (params, opt_state), losses = jax.lax.scan(step, (state.params, opt_state), jax.random.split(key, local_steps))
        return state._replace(params=params), opt_state, losses.mean()

    return train
