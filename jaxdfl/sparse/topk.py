"""Exact top-k masks, jittable and vmappable, with k a traced integer (it may change every round).

All selections are by magnitude and keep *exactly* k entries: ties are broken by position (the earlier
entry wins), so a mask never holds more or fewer entries than asked for.

On CPU the selections need no sort: a bisection over the float's bit pattern (31 rounds of compare-and-count,
each a vectorised pass over the data) finds the k-th largest value, and a mask keeps what lies above it and
the first of the entries tied with it: 3.1–3.6× faster than ``lax.top_k`` (static k, plus a scatter into a
mask) and about 50× the double argsort. On an H200 the opposite holds (sorting and ``lax.top_k`` are 1.4–7×
faster than the bisection), so each selection picks its implementation per backend with
``lax.platform_dependent``; ``experiments/bench_topk.py`` measures all of them side by side.
:func:`descending_rank` (the double argsort, exact with ties by position) is the reference the tests
compare against.

A Pallas kernel (:mod:`jaxdfl.sparse.topk_kernel`: the same bisection, each block of rows held in fast memory
for all 31 rounds) can replace the sort and ``lax.top_k`` on CUDA GPUs (Triton lowering) and on TPU (Mosaic),
but only when asked for: set ``JAXDFL_TOPK_KERNEL=pallas`` before importing jaxdfl (or :data:`KERNEL` to
``"pallas"`` before the first trace: jitted functions keep the choice they were traced with). Without it, and
always on CPU or for rows longer than ``topk_kernel.MAX_ROW``, the jnp versions above run. The Pallas path is
tested in interpret mode on CPU; its GPU/TPU lowering has not been run yet (it was only compiled ahead of
time, ``docs/benchmarks.md``) and its speed is unmeasured; ``experiments/bench_gpu.sh`` measures it.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp

from jaxdfl.sparse import topk_kernel

KERNEL = os.environ.get("JAXDFL_TOPK_KERNEL", "jnp")  # "pallas": the Pallas kernel on CUDA GPUs and TPUs
if KERNEL not in ("jnp", "pallas"):
    raise ValueError(f"JAXDFL_TOPK_KERNEL must be 'jnp' or 'pallas', got {KERNEL!r}")


def descending_rank(x: jax.Array) -> jax.Array:
    """Rank of each entry of the last axis by value, 0 = largest; ties by position. Same shape, int32."""
    order = jnp.argsort(-x, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1, stable=True).astype(jnp.int32)


def mask_top_k(a: jax.Array, k) -> jax.Array:
    """Bool mask of the ``k`` largest entries along the last axis of a non-negative ``a`` ``[..., n]``
    (``k`` an int or ``[..., 1]`` ints in ``[0, n]``), ties kept by position: the same mask as
    ``descending_rank(a) < k``. On CPU by bisection, elsewhere by sorting (the faster of the two on each,
    ``docs/benchmarks.md``), or with :data:`KERNEL` = ``"pallas"`` by the Pallas kernel on GPU and TPU."""
    k = jnp.asarray(k, jnp.int32)
    return jax.lax.platform_dependent(a, k, cpu=_mask_by_bisection, default=lambda a, k: descending_rank(a) < k,
                                      **_pallas_branches(topk_kernel.mask_top_k_pallas, a.shape[-1]))


def _pallas_branches(kernel, n: int) -> dict:
    """``platform_dependent`` branches running ``kernel`` on GPU and TPU, if :data:`KERNEL` asks for them
    and a row of ``n`` entries fits one block; else none."""
    if KERNEL != "pallas" or not topk_kernel.fits(n):
        return {}
    return {"cuda": lambda *args: kernel(*args, platform="gpu"), "tpu": lambda *args: kernel(*args, platform="tpu")}


def _mask_by_bisection(a: jax.Array, k: jax.Array) -> jax.Array:
    kth = _bisect(a, k)
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
    ``x >= result`` keeps the top k (and any entries tied with the k-th). On CPU, or for a traced k, by
    bisection; elsewhere, for a Python int k, ``lax.top_k`` (the faster of the two on each); with
    :data:`KERNEL` = ``"pallas"``, the Pallas kernel on GPU and TPU.
    """
    pallas = _pallas_branches(topk_kernel.kth_largest_pallas, x.shape[-1])
    if isinstance(k, int) and k >= 1:  # lax.top_k needs k static: the branch keeps the int, ignores its array
        default = lambda x, _: jax.lax.top_k(x.astype(jnp.float32), k)[0][..., -1:]  # noqa: E731
    elif pallas:
        default = _bisect
    else:
        return _bisect(x, k)
    return jax.lax.platform_dependent(x, jnp.asarray(k, jnp.int32), cpu=_bisect, default=default, **pallas)


def _bisect(x: jax.Array, k) -> jax.Array:
    """:func:`kth_largest` by bisection: non-negative float32 values order like their int32 bit patterns, so
    31 rounds of halving the bit range, each one comparison and one count per entry, find the exact value."""
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
