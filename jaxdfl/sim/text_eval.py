"""Exact match of generated answers for a text run: the adapted models and the base, task by task.

Multiple-choice log-likelihood is the engine's evaluation (every device, every task, every round it
evaluates). Generation costs several forward passes per answer, so this runs once, at the end of a run, and
each task is answered by one device: the first still alive that trained on it (devices with mixed data:
device ``t mod M`` for task t). Methods with an implicit mixture of experts answer with every expert the
device holds.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxdfl.core import adapter_hook, expert_views
from jaxdfl.models.generate import exact_match, generate_answers
from jaxdfl.sim.build import Simulation
from jaxdfl.sim.processes import to_host
from jaxdfl.sim.state import SimState


MAX_NEW_TOKENS = 8  # the generated tasks' answers take at most 4 tokens with the end of turn


def answering_device(task_of_device: np.ndarray, task: int, alive: np.ndarray | None = None) -> int:
    """The device whose model answers ``task``'s generated questions: the first that trained on the task,
    else device ``task mod M``; where ``alive`` ``[M]`` is given (and some are), among the devices alive."""
    m = len(task_of_device)
    alive = np.ones(m, bool) if alive is None or not np.asarray(alive)[:m].any() else np.asarray(alive)[:m]
    own = np.flatnonzero((task_of_device == task) & alive)
    if len(own):
        return int(own[0])
    anyone = np.flatnonzero(alive)
    return int(anyone[task % len(anyone)])


def exact_match_by_task(sim: Simulation, state: SimState | None, w, stored: float = 0.0) -> dict[str, float]:
    """``{task: exact match}``; ``state=None`` measures the base model alone."""
    data, method = sim.data, sim.method
    max_new = MAX_NEW_TOKENS
    hook_fn, views = None, None
    if state is not None:
        adapters = state.adapter
        if method.experts is not None:
            views = expert_views(jax.vmap(method.experts.expert)(adapters), w, stored)

        def hook_fn(args, name, h):  # args: (the device's adapter, its ExpertView or None)
            return adapter_hook(method, *args)(name, h)

    scores = {}
    for t, (name, examples) in enumerate(zip(data.task_names, data.test_examples)):
        args = None
        if state is not None:
            i = answering_device(data.task_of_device, t, to_host(state.alive))
            own = jax.tree.map(lambda a: a[i], adapters)
            view = None if views is None else views._replace(held=views.held[i], stored=views.stored[i],
                                                             index=views.index[i])
            args = (own, view)
        replies = generate_answers(sim.base, sim.model.spec, sim.model.tokenizer, examples, max_new, hook_fn, args)
        scores[name] = exact_match(replies, examples)
    return scores
