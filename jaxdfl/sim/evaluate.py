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


ROUTINGS = ("mixture", "own", "oracle", "share")


def make_evaluate(objective: Objective, method: Method, device_chunk: int = 0,
                  task_of_device=None) -> Callable:
    """``evaluate(adapter, base, test, w, stored=0.0, devices=None, routing="mixture") -> accuracy [M, T]``:
    every device's model on every task (:func:`task_accuracies`); with ``devices`` ``[N]`` only those
    devices' (``[N, T]``).

    A method with an expert mixture answers with every expert a device holds
    (:func:`~jaxdfl.core.expert_views`): the devices it aggregates with under the planned mixing matrix ``w``
    ``[M, M]`` and, when ``stored`` is 1, the experts of the devices it gives zero weight (other clusters,
    after an exchange). Other methods use each device's own adapter; ``w`` is then unused.

    ``routing`` (expert mixtures only; Paper A's claims need all three, ``docs/methods.md``):
      ``"mixture"`` the inference the paper describes, A(24) with A(29), over every held expert;
      ``"own"`` each device's own adapter alone (``method.delta``), no other expert;
      ``"oracle"`` each test input of task t answered by the mixture of the held experts trained on task t
      (``task_of_device`` ``[M]``), the ceiling any router could reach with these adapters; a device that
      holds no expert of task t answers it with the base model;
      ``"share"`` the routing diagnostic: instead of accuracies, ``{layer: [M, T]}``, the share of the
      components the mixture's top-k keeps (A(29)) that come from experts trained on the input's task, averaged
      over the test inputs of each task (and their positions), from ``method.experts.route``.
    """

    def one_device(shared, mine):
        base, test, experts = shared
        adapter, view = mine
        view = None if view is None else view._replace(experts=experts)
        return task_accuracies(objective, base, adapter_hook(method, adapter, view), test)

    def each_task(score):
        """One device's ``score(base, adapter, view, x, y, n, t)`` on every task's test set."""
        def one_device(shared, mine):
            base, test, experts = shared
            adapter, view = mine
            view = view._replace(experts=experts)
            return jax.lax.map(lambda args: score(base, adapter, view, *args), (*test, jnp.arange(test.n.shape[0])))
        return one_device

    def routed(base, adapter, view, x, y, n, t):
        of_task = (task_of_device == t).astype(view.held.dtype)
        view = view._replace(held=view.held * of_task, stored=view.stored * of_task)
        correct = objective.scores(base, x, adapter_hook(method, adapter, view)).argmax(-1) == y
        return jnp.where(jnp.arange(y.shape[0]) < n, correct, False).sum() / n

    def share(base, adapter, view, x, y, n, t):
        of_task = (task_of_device == t).astype(jnp.float32)
        shares = {}

        def hook(name, h):  # records, per layer, while the mixture answers (the trace returns them)
            route = method.experts.route(adapter, name, h, view)
            if route is not None:
                per_input = (route @ of_task).reshape(h.shape[0], -1).mean(-1)
                shares[name] = jnp.where(jnp.arange(h.shape[0]) < n, per_input, 0.0).sum() / n
            return method.experts.infer(adapter, name, h, view)

        objective.scores(base, x, hook)
        return shares

    every_device = over_devices(one_device, device_chunk)
    every_device_routed = over_devices(each_task(routed), device_chunk)
    every_device_share = over_devices(each_task(share), device_chunk)

    def evaluate(adapter, base, test: TestSets, w, stored=0.0, devices=None, routing: str = "mixture"):
        rows = (lambda tree: tree) if devices is None else (lambda tree: jax.tree.map(lambda a: a[devices], tree))
        if method.experts is None or routing == "own":
            return every_device((base, test, None), (rows(adapter), None))
        view = expert_views(jax.vmap(method.experts.expert)(adapter), w, stored)
        apply = {"oracle": every_device_routed, "share": every_device_share}.get(routing, every_device)
        return apply((base, test, view.experts), rows((adapter, view._replace(experts=None))))

    return evaluate
