"""Evaluation: every device's model on every task's test set, and the frozen base model alone."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxdfl.core import Method, adapter_hook, expert_views
from jaxdfl.sim.local import over_devices
from jaxdfl.sim.objective import Objective


class TestSets(NamedTuple):
    """Every task's test set: ``x`` ``[T, m_max, ...]``, ``y`` ``[T, m_max]``, ``n`` ``[T]`` real examples."""

    x: jax.Array
    y: jax.Array
    n: jax.Array


def task_accuracies(objective: Objective, base, hook, test: TestSets) -> jax.Array:
    """``[T]``: the model ``base`` + ``hook`` (None: the base alone) on every task's test set."""

    def one_task(args):
        x, y, n = args
        correct = objective.scores(base, x, hook).argmax(-1) == y
        return jnp.where(jnp.arange(y.shape[0]) < n, correct, False).sum() / n

    return jax.lax.map(one_task, tuple(test))


def make_evaluate(objective: Objective, method: Method, device_chunk: int = 0) -> Callable:
    """``evaluate(adapter, base, test, w, stored=0.0, devices=None) -> accuracy [M, T]``: every device's model
    on every task (:func:`task_accuracies`); with ``devices`` ``[N]`` only those devices' (``[N, T]``).

    A method with an expert mixture answers with every expert a device holds
    (:func:`~jaxdfl.core.expert_views`): the devices it aggregates with under the planned mixing matrix ``w``
    ``[M, M]`` and, when ``stored`` is 1, the experts of the devices it gives zero weight (other clusters,
    after an exchange). Other methods use each device's own adapter; ``w`` is then unused."""

    def one_device(shared, mine):
        base, test, experts = shared
        adapter, view = mine
        view = None if view is None else view._replace(experts=experts)
        return task_accuracies(objective, base, adapter_hook(method, adapter, view), test)

    every_device = over_devices(one_device, device_chunk)

    def evaluate(adapter, base, test: TestSets, w, stored=0.0, devices=None):
        rows = (lambda tree: tree) if devices is None else (lambda tree: jax.tree.map(lambda a: a[devices], tree))
        if method.experts is None:
            return every_device((base, test, None), (rows(adapter), None))
        view = expert_views(jax.vmap(method.experts.expert)(adapter), w, stored)
        return every_device((base, test, view.experts), rows((adapter, view._replace(experts=None))))

    return evaluate
