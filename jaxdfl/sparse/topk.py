"""Exact top-k masks, jittable and vmappable, with k a traced integer (it may change every round).

All selections are by magnitude and keep *exactly* k entries: ties are broken by position (the earlier
entry wins), so a mask never holds more or fewer entries than asked for.

The selections need no sort: :func:`kth_largest` finds the k-th largest value by a bisection over the
float's bit pattern (31 rounds of compare-and-count, each a pass over the data that vectorises on every
backend), then :func:`mask_top_k` keeps what lies above it and the first of the entries tied with it.
``lax.top_k`` needs a static k and returns indices that must then be scattered into a mask; the double
argsort these masks used before costs two sorts. ``experiments/bench_topk.py`` measures all of them side by
side; :func:`descending_rank` (the double argsort) stays as the reference the tests compare against.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def descending_rank(x: jax.Array) -> jax.Array:
    """Rank of each entry of the last axis by value, 0 = largest; ties by position. Same shape, int32."""
    order = jnp.argsort(-x, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1, stable=True).astype(jnp.int32)


def mask_top_k(a: jax.Array, k) -> jax.Array:
    """Bool mask of the ``k`` largest entries along the last axis of a non-negative ``a`` ``[..., n]``
    (``k`` an int or ``[..., 1]`` ints in ``[0, n]``), ties kept by position: the same mask as
    ``descending_rank(a) < k``, without a sort."""
    k = jnp.asarray(k, jnp.int32)
    kth = kth_largest(a, k)
    above = a > kth
    tied = a == kth
    room = k - above.sum(-1, keepdims=True, dtype=jnp.int32)  # how many of the tied entries still fit
    return above | (tied & (jnp.cumsum(tied, axis=-1, dtype=jnp.int32) <= room))


def top_k_mask(x: jax.Array, k) -> jax.Array:
    """0/1 mask (x's dtype) keeping the ``k`` largest-|x| entries of the whole array; ``0 ≤ k ≤ x.size``."""
    return mask_top_k(jnp.abs(x).reshape(-1), k).reshape(x.shape).astype(x.dtype)


def top_k_per_row(x: jax.Array, k: jax.Array) -> jax.Array:
    """0/1 mask keeping the ``k[i]`` largest-|x| entries of row i; ``x`` ``[rows, n]``, ``k`` ``[rows]``."""
    return mask_top_k(jnp.abs(x), k[:, None]).astype(x.dtype)


def random_k_mask(key: jax.Array, shape, k, dtype=jnp.float32) -> jax.Array:
    """0/1 mask with exactly ``k`` entries chosen uniformly at random (without replacement)."""
    scores = jax.random.uniform(key, (math.prod(shape),))
    return mask_top_k(scores, k).reshape(shape).astype(dtype)


def kth_largest(x: jax.Array, k) -> jax.Array:
    """The ``k``-th largest value along the last axis of a non-negative ``x`` ``[..., n]``, shape ``[..., 1]``
    (``k`` an int or ``[..., 1]`` ints, possibly traced, ``1 ≤ k ≤ n``; for k = 0 the result is +inf).

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
