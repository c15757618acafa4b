"""Robust aggregation: what a receiver makes of the messages it hears when some senders may lie.

Every rule works on one receiver's view, written for ONE receiver and ``vmap``ped over receivers:

  * ``u`` ``[D, P]``: each of the D senders' message minus the receiver's centre (its own round-start
    parameters, or 0 for methods that send deltas), flattened over the message's leaves;
  * ``present`` ``[D, P]`` bool: sender d's entry p reaches the receiver (the mixing weight is non-zero and
    the sender's mask holds p);
  * ``weight`` ``[D]``: the mixing weights of the senders (0 for devices not heard).

and returns ``[P]``, the receiver's estimate of the update (0 where no sender holds an entry). The receiver's
mixed value is ``centre + estimate`` (times the row sum of W for dense messages, the scale the plain mixing
has; ``docs/methods.md``). ``mean`` is the plain weighted average, the same numbers as
:func:`jaxdfl.topology.mix`; the others bound what a minority of senders can do to the result.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl.core import Message, Mixed
from jaxdfl.topology.mixing import mix_tree
from jaxdfl.topology.neighbours import Neighbours


def weighted_mean(u, present, weight):
    """``Σ_d w_d u_d / Σ_d w_d`` per entry, over the senders that hold it."""
    w = jnp.where(present, weight[:, None], 0.0)
    return jnp.sum(w * u, 0) / jnp.where(w.sum(0) > 0, w.sum(0), 1.0)


def coordinate_median(u, present, weight):
    """The median of each entry over the senders that hold it (Yin et al. 2018), unweighted."""
    med = jnp.nanmedian(jnp.where(present, u, jnp.nan), axis=0)
    return jnp.where(present.any(0), med, 0.0)


def trimmed_mean(u, present, weight, trim: float):
    """Per entry, of its c senders drop the ⌊trim·c⌋ largest and the ⌊trim·c⌋ smallest values and average the
    rest (Yin et al. 2018), unweighted."""
    count = present.sum(0)
    cut = jnp.floor(trim * count)
    ordered = jnp.sort(jnp.where(present, u, jnp.inf), axis=0)  # absent entries sort last
    rank = jnp.arange(u.shape[0])[:, None]
    keep = (rank >= cut) & (rank < count - cut)
    return jnp.sum(jnp.where(keep, ordered, 0.0), 0) / jnp.maximum(keep.sum(0), 1)


def krum_scores(u, present, weight, byzantine: int):
    """``[D]`` Krum scores: each heard sender's summed squared distance to its ``n − f − 2`` nearest heard
    senders (n heard, at least one neighbour counted); ``inf`` for senders not heard. Distances are taken over
    the sent entries (absent ones count as 0)."""
    heard = weight > 0
    v = jnp.where(present, u, 0.0)
    sq = jnp.sum(v * v, 1)
    dist = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * v @ v.T, 0.0)
    n = heard.sum()
    nearest = jnp.clip(n - byzantine - 2, 1, jnp.maximum(n - 1, 1))
    others = heard[None, :] & ~jnp.eye(u.shape[0], dtype=bool)
    ordered = jnp.sort(jnp.where(others, dist, jnp.inf), axis=1)
    cumulative = jnp.cumsum(jnp.where(jnp.isfinite(ordered), ordered, 0.0), axis=1)
    score = jnp.take(cumulative, nearest - 1, axis=1)
    return jnp.where(heard, jnp.where(n > 1, score, 0.0), jnp.inf)


def multi_krum(u, present, weight, byzantine: int, select: int):
    """The weighted mean of the ``select`` senders with the lowest Krum scores (``select`` 1: Krum itself;
    0: ``n − f``, at least one)."""
    score = krum_scores(u, present, weight, byzantine)
    n = (weight > 0).sum()
    m = jnp.clip(select if select > 0 else n - byzantine, 1, jnp.maximum(n, 1))
    rank = jnp.argsort(jnp.argsort(score))
    chosen = (rank < m) & (weight > 0)
    return weighted_mean(u, present & chosen[:, None], jnp.where(chosen, weight, 0.0))


def clipped_mean(u, present, weight, clip_norm: float):
    """The weighted mean after scaling each sender's update to norm at most ``clip_norm`` (the norm over
    every entry it sent)."""
    v = jnp.where(present, u, 0.0)
    norm = jnp.sqrt(jnp.sum(v * v, 1))
    factor = jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-12))
    return weighted_mean(u * factor[:, None], present, weight)


def make_rule(agg_cfg) -> Callable:
    """``rule(u, present, weight) -> [P]`` from the ``aggregation`` config section."""
    name = agg_cfg.rule
    if name == "mean":
        return weighted_mean
    if name == "median":
        return coordinate_median
    if name == "trimmed_mean":
        return lambda u, p, w: trimmed_mean(u, p, w, agg_cfg.trim)
    if name == "krum":
        return lambda u, p, w: multi_krum(u, p, w, agg_cfg.byzantine, 1)
    if name == "multi_krum":
        return lambda u, p, w: multi_krum(u, p, w, agg_cfg.byzantine, agg_cfg.krum_select)
    return lambda u, p, w: clipped_mean(u, p, w, agg_cfg.clip_norm)


def flatten(tree) -> tuple[jax.Array, Callable]:
    """Leaves ``[M, ...]`` → ``[M, P]`` and the function taking ``[M, P]`` back to the tree."""
    leaves, treedef = jax.tree.flatten(tree)
    m = leaves[0].shape[0]
    sizes = [x[0].size for x in leaves]
    flat = jnp.concatenate([x.reshape(m, -1).astype(jnp.float32) for x in leaves], axis=1)

    def unflatten(rows):
        parts = jnp.split(rows, np.cumsum(sizes)[:-1].tolist(), axis=1)
        return treedef.unflatten([p.reshape(rows.shape[0], *x.shape[1:]).astype(x.dtype)
                                  for p, x in zip(parts, leaves)])

    return flat, unflatten


def robust_mix(rule: Callable, w: jax.Array | Neighbours, message: Message, centre, server: bool = False) -> Mixed:
    """What every receiver makes of the round's messages under ``rule``, as :class:`~jaxdfl.core.Mixed`.

    Args:
      rule: ``rule(u, present, weight) -> [P]`` (:func:`make_rule`).
      w: the delivered mixing matrix ``[M, M]`` (receiver, sender) or neighbour lists.
      message: every device's message, leaves ``[M, ...]``.
      centre: pytree like ``message.values``, each receiver's centre ``[M, ...]``; None: 0.
      server: every row of W is the same (a server's aggregate): the rule runs once and every device
        receives its result.
    """
    values, unflatten = flatten(message.values)
    mask = None if message.mask is None else flatten(message.mask)[0] > 0
    centre_flat = jnp.zeros_like(values) if centre is None else flatten(centre)[0]
    if isinstance(w, Neighbours):
        index, weight = w.index, w.weight
    else:
        index, weight = jnp.broadcast_to(jnp.arange(w.shape[1]), w.shape), w

    def receive(idx, wts, c):
        u = values[idx] - c
        present = (wts > 0)[:, None] & (True if mask is None else mask[idx])
        estimate = rule(u, present, wts)
        if mask is None:  # dense messages mix as Σ_j W_ij v_j: keep the row's scale
            return wts.sum() * (c + estimate)
        held = present.any(0)
        return jnp.where(held, c + estimate, 0.0)

    if server:
        out = jnp.broadcast_to(receive(index[0], weight[0], centre_flat[0]), values.shape)
    else:
        out = jax.vmap(receive)(index, weight, centre_flat)
    mass = None if message.mask is None else mix_tree(w, message.mask)
    return Mixed(unflatten(out), mass)
