"""Exact top-k masks, jittable and vmappable, with k a traced integer (it may change every round).

All selections are by magnitude and keep *exactly* k entries: ties are broken by position, so a mask never
holds more or fewer entries than asked for. The ranks come from a double argsort (O(n log n)); it is exact
and small next to a training step. A faster threshold search can replace these functions without
changing their callers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def descending_rank(x: jax.Array) -> jax.Array:
    """Rank of each entry of the last axis by value, 0 = largest; ties by position. Same shape, int32."""
    order = jnp.argsort(-x, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1, stable=True).astype(jnp.int32)


def top_k_mask(x: jax.Array, k) -> jax.Array:
    """0/1 mask (x's dtype) keeping the ``k`` largest-|x| entries of the whole array; ``0 ≤ k ≤ x.size``."""
    flat = descending_rank(jnp.abs(x).reshape(-1)) < k
    return flat.reshape(x.shape).astype(x.dtype)


def top_k_per_row(x: jax.Array, k: jax.Array) -> jax.Array:
    """0/1 mask keeping the ``k[i]`` largest-|x| entries of row i; ``x`` ``[rows, n]``, ``k`` ``[rows]``."""
    return (descending_rank(jnp.abs(x)) < k[:, None]).astype(x.dtype)


def random_k_mask(key: jax.Array, shape, k, dtype=jnp.float32) -> jax.Array:
    """0/1 mask with exactly ``k`` entries chosen uniformly at random (without replacement)."""
    scores = jax.random.uniform(key, (math.prod(shape),))
    return (descending_rank(scores) < k).reshape(shape).astype(dtype)
