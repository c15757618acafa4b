"""The host side of a run's rounds: what the topology and the network plan for each round, stacked for one
scanned program, and how a run is cut into programs."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl.core import RoundControl
from jaxdfl.sim.state import RoundInputs
from jaxdfl.topology import Topology, neighbours


def round_inputs(topology: Topology, positions: Callable[[int], np.ndarray | None], key: jax.Array, start: int,
                 stop: int, sparse: bool = False, online: Callable[[int], np.ndarray] | None = None,
                 steps: Callable[[int], np.ndarray] | None = None) -> RoundInputs:
    """:class:`RoundInputs` of rounds ``start..stop-1`` stacked ``[R, ...]``: round r's key is
    ``fold_in(key, r)``, its W (``sparse``: the topology's neighbour lists), active set and flags the
    topology's, its positions the network's, its online devices ``online``'s (None: all, every round), its
    local steps per device ``steps``' (None: all). A
    round's inputs depend only on its index, never on how a run reached it (resume-safe)."""
    rounds = range(start, stop)
    stack = lambda items: jax.tree.map(lambda *xs: np.stack(xs), *items)  # noqa: E731
    return RoundInputs(
        key=jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(start, stop)),
        round=np.arange(start, stop, dtype=np.int32),
        w=neighbours.stack([topology.neighbours(r) for r in rounds]) if sparse
        else np.stack([topology.mixing(r) for r in rounds]),
        active=None if topology.num_active is None else np.stack([topology.active(r) for r in rounds]),
        control=stack([_as_arrays(topology.control(r)) for r in rounds]),
        positions=None if positions(start) is None else np.stack([positions(r) for r in rounds]),
        available=None if online is None else np.stack([online(r) for r in rounds]),
        steps=None if steps is None else np.stack([steps(r) for r in rounds]))


def _as_arrays(control: RoundControl) -> RoundControl:
    return control._replace(exchange=np.bool_(control.exchange), stored=np.float32(control.stored))


def segments(done: int, rounds: int, eval_every: int, checkpoint_every: int) -> list[tuple[int, int]]:
    """Cut rounds ``done..rounds-1`` into the stretches one program runs: each ends where the run evaluates
    (every ``eval_every`` rounds), checkpoints (every ``checkpoint_every``; 0: never) or stops."""
    if done >= rounds:
        return []
    ends = {rounds} | {r for r in range(done + 1, rounds) if r % eval_every == 0
                       or (checkpoint_every and r % checkpoint_every == 0)}
    bounds = [done, *sorted(ends)]
    return list(zip(bounds[:-1], bounds[1:]))
