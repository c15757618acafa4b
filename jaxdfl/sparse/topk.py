"""Exact top-k masks, jittable and vmappable, with k a traced integer (it may change every round).

All selections are by magnitude and keep *exactly* k entries: ties are broken by position, so a mask never
holds more or fewer entries than asked for. The ranks come from a double argsort (O(n log n)); it is exact
and small next to a training step.

:func:`kth_largest` is the hot-path kernel of implicit-MoE inference (a per-token top-k over every held
expert's rank components): a bisection over the float's bit pattern, 31 rounds of compare-and-count, exact
and 7× faster than ``lax.top_k`` on CPU for 200,000 rows of 128 (0.25 s against 1.7 s, 2 cores).
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


def kth_largest(x: jax.Array, k: int) -> jax.Array:
    """The ``k``-th largest value along the last axis of a non-negative ``x`` ``[..., n]``, shape ``[..., 1]``
    (``1 ≤ k ≤ n``).

    Non-negative float32 values order like their int32 bit patterns, so a bisection over the bit pattern
    finds the exact value in 31 rounds, each one comparison and one count per entry; ``x >= result`` keeps
    the top k (and any entries tied with the k-th).
    """
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    lo = jnp.zeros((*x.shape[:-1], 1), jnp.int32)  # invariant: at least k entries ≥ lo, fewer than k ≥ hi
    hi = jnp.full_like(lo, 0x7F800001)  # just above +inf

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(bits >= mid, axis=-1, keepdims=True) >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid)

    lo, _ = jax.lax.fori_loop(0, 31, halve, (lo, hi))
    return jax.lax.bitcast_convert_type(lo, jnp.float32)
