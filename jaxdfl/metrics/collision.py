"""Parameter collision between sparse masks (A(19)).

A *collision* is a parameter position that two or more devices train (and send) at once: their values are
averaged together and interfere. Both functions are pure jnp and jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdfl.topology.mixing import links, mix_tree
from jaxdfl.topology.neighbours import Neighbours


def collision_rate(s: jax.Array) -> jax.Array:
    """Probability that two or more devices are active at a position, A(19):

        S = 1 − Π_j (1 − s_j) − Σ_j s_j Π_{z≠j} (1 − s_z),

    with device j active independently with probability s_j (its density, the share of its mask that is on).

    Args:
      s: ``[devices]`` or ``[devices, layers]`` densities in [0, 1].

    Returns:
      A scalar, or ``[layers]``. Differentiable in ``s`` everywhere, including at s_j = 1: the products over
      z ≠ j are formed from prefix and suffix products, never by dividing by (1 − s_j).
    """
    s = jnp.asarray(s, jnp.float32)
    q = 1.0 - s
    ones = jnp.ones_like(q[:1])
    before = jnp.cumprod(jnp.concatenate([ones, q[:-1]]), axis=0)  # Π_{z<j} (1 − s_z)
    after = jnp.flip(jnp.cumprod(jnp.flip(jnp.concatenate([q[1:], ones]), 0), axis=0), 0)  # Π_{z>j}
    none_active = jnp.prod(q, axis=0)
    exactly_one = jnp.sum(s * before * after, axis=0)
    return jnp.clip(1.0 - none_active - exactly_one, 0.0, 1.0)


def empirical_collision(masks: jax.Array) -> jax.Array:
    """Share of positions where two or more devices' masks are on (the measured counterpart of A(19)).

    Args:
      masks: ``[devices, ...]`` booleans or 0/1 values; every position after the device axis counts once.

    Returns:
      A scalar in [0, 1].
    """
    active = jnp.sum(jnp.asarray(masks) != 0, axis=0)
    return jnp.mean((active >= 2).astype(jnp.float32))


def _in_neighbours(w) -> tuple[jax.Array, jax.Array]:
    """``(index [M, D], linked [M, D] float)`` of W dense ``[M, M]`` (D = M) or as neighbour lists."""
    if isinstance(w, Neighbours):
        return w.index, (w.weight != 0).astype(jnp.float32)
    return jnp.broadcast_to(jnp.arange(w.shape[0]), w.shape), (w != 0).astype(jnp.float32)


def neighbourhood_collision(w, masks) -> jax.Array:
    """Mean over devices i of the share of positions where two or more of i's in-neighbours (W_ij > 0, i
    included) hold a mask entry: the empirical counterpart of A(19) for every aggregation set.

    ``w`` ``[M, M]`` or :class:`~jaxdfl.topology.neighbours.Neighbours`; ``masks`` pytree of 0/1 ``[M, ...]``;
    all layers' positions pooled."""
    m = jax.tree.leaves(masks)[0].shape[0]
    counts = [c.reshape(m, -1) for c in jax.tree.leaves(mix_tree(links(w), masks))]
    return jnp.mean(jnp.concatenate(counts, axis=1) >= 2)


def neighbourhood_collision_rate(w, masks) -> jax.Array:
    """A(19) for every device's aggregation set {j: W_ij > 0}, each device j active at a leaf's positions
    with probability s_j = its mask's density there; per device the layers are pooled by their sizes (the
    expected value of :func:`neighbourhood_collision`), then averaged over devices. Memory ``[M, D, leaves]``
    (D = M for a dense ``w``)."""
    leaves = jax.tree.leaves(masks)
    s = jnp.stack([m.reshape(m.shape[0], -1).mean(1) for m in leaves], axis=1)  # [M, leaves]
    sizes = jnp.array([m[0].size for m in leaves], jnp.float32)
    index, linked = _in_neighbours(w)
    per_leaf = jax.vmap(lambda idx, on: collision_rate(on[:, None] * s[idx]))(index, linked)  # [M, leaves]
    return jnp.mean(per_leaf @ sizes / sizes.sum())
