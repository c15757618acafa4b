"""Parameter collision between sparse masks (A(19)).

A *collision* is a parameter position that two or more devices train (and send) at once: their values are
averaged together and interfere. Both functions are pure jnp and jittable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


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


def neighbourhood_collision(w: jax.Array, masks) -> jax.Array:
    """Mean over devices i of the share of positions where two or more of i's in-neighbours (W_ij > 0, i
    included) hold a mask entry: the empirical counterpart of A(19) for every aggregation set.

    ``w`` ``[M, M]``; ``masks`` pytree of 0/1 ``[M, ...]``; all layers' positions pooled."""
    linked = (w != 0).astype(jnp.float32)
    counts = [jnp.einsum("ij,j...->i...", linked, m).reshape(w.shape[0], -1) for m in jax.tree.leaves(masks)]
    return jnp.mean(jnp.concatenate(counts, axis=1) >= 2)


def neighbourhood_collision_rate(w: jax.Array, masks) -> jax.Array:
    """A(19) for every device's aggregation set {j: W_ij > 0}, each device j active at a leaf's positions
    with probability s_j = its mask's density there; per device the layers are pooled by their sizes (the
    expected value of :func:`neighbourhood_collision`), then averaged over devices."""
    leaves = jax.tree.leaves(masks)
    s = jnp.stack([m.reshape(m.shape[0], -1).mean(1) for m in leaves], axis=1)  # [M, leaves]
    sizes = jnp.array([m[0].size for m in leaves], jnp.float32)
    linked = (w != 0).astype(jnp.float32)
    per_leaf = jax.vmap(lambda row: collision_rate(row[:, None] * s))(linked)  # [M, leaves]
    return jnp.mean(per_leaf @ sizes / sizes.sum())
