"""A Pallas kernel for the exact top-k selections of :mod:`jaxdfl.sparse.topk`: per row, the k-th largest
value and the mask of the k largest entries (ties by position), with k traced and per row.

The algorithm is the one of ``topk._bisect``: non-negative float32 values order like their int32 bit
patterns, so 31 rounds of compare-and-count over the bits find the k-th largest exactly; a mask keeps what
lies above it, plus the first of the tied entries (a second bisection, over positions, finds where the ties
that still fit end; it is skipped when every row keeps all its ties). Each program instance holds a block of
whole rows in fast memory (registers on a GPU, VMEM on a TPU), so a row comes from HBM once instead of once
per round. Rows are padded to the block with bit pattern -1 (a negative int32: never counted, never tied) and
padded rows get k = 0; the results are cut back to the input's shape.

Block sizes, per ``platform``:
  * ``"gpu"`` (the Triton lowering, asked for explicitly: JAX's default GPU lowering is now Mosaic GPU, whose
    ``pallas_call`` path is deprecated, while Triton is kept on a best-effort basis): Triton needs power-of-two
    shapes, so a row is padded to the next power of two and a block holds about 4,096 entries (several short
    rows, or one long one); warps grow with the block, about 32 to 64 entries per thread;
  * ``"tpu"`` (Mosaic): a block's last two dims must be multiples of (8, 128) or the whole array, so a row is
    padded to a multiple of 128 lanes and a block holds a multiple of 8 rows, about 1 MiB of them (a single
    row is a (1, n) block: it uses one sublane in eight).
Rows longer than :data:`MAX_ROW` do not fit one block; :func:`fits` says which do. In interpret mode (CPU)
either layout runs; its results are exact, its timings meaningless.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

MAX_ROW = 1 << 16  # the longest row held in one block (65,536 float32: 256 KiB)
_INF_PLUS = 0x7F800001  # the bit pattern just above +inf


def fits(n: int) -> bool:
    """Whether a row of ``n`` entries fits one block of the kernel."""
    return n <= MAX_ROW


def kth_largest_pallas(x: jax.Array, k, *, platform: str | None = None, interpret: bool = False) -> jax.Array:
    """The ``k``-th largest value along the last axis of a non-negative ``x`` ``[..., n]``, shape ``[..., 1]``
    float32 (``k`` an int or ``[..., 1]`` ints in ``[0, n]``, possibly traced; k = 0 gives +inf): the same
    value as ``topk.kth_largest``. ``platform`` is ``"gpu"`` or ``"tpu"`` (default: the default backend's)."""
    out = _run(x, k, platform, interpret, with_mask=False)
    return jax.lax.bitcast_convert_type(out, jnp.float32)


def mask_top_k_pallas(x: jax.Array, k, *, platform: str | None = None, interpret: bool = False) -> jax.Array:
    """Bool mask of the ``k`` largest entries along the last axis of a non-negative ``x`` ``[..., n]``, ties
    kept by position: the same mask as ``topk.descending_rank(x) < k``. Arguments as for
    :func:`kth_largest_pallas`."""
    return _run(x, k, platform, interpret, with_mask=True)


def _run(x, k, platform, interpret, *, with_mask):
    """Flattens ``x`` to ``[rows, n]`` int32 bits, pads it to whole blocks, runs the kernel, cuts the result."""
    *lead, n = x.shape
    rows = math.prod(lead)
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32).reshape(rows, n)
    k = jnp.broadcast_to(jnp.asarray(k, jnp.int32), (*lead, 1)).reshape(rows, 1)
    platform = platform or ("tpu" if jax.default_backend() == "tpu" else "gpu")
    block_rows, width, params = (_tpu_layout if platform == "tpu" else _gpu_layout)(rows, n)
    padded_rows = -(-rows // block_rows) * block_rows
    bits = jnp.pad(bits, ((0, padded_rows - rows), (0, width - n)), constant_values=-1)
    k = jnp.pad(k, ((0, padded_rows - rows), (0, 0)))
    out_width = width if with_mask else 1
    out = pl.pallas_call(
        functools.partial(_kernel, with_mask=with_mask),
        out_shape=jax.ShapeDtypeStruct((padded_rows, out_width), jnp.bool_ if with_mask else jnp.int32),
        grid=(padded_rows // block_rows,),
        in_specs=[pl.BlockSpec((block_rows, width), lambda i: (i, 0)),
                  pl.BlockSpec((block_rows, 1), lambda i: (i, 0))],
        out_specs=pl.BlockSpec((block_rows, out_width), lambda i: (i, 0)),
        compiler_params=params,
        interpret=interpret,
    )(bits, k)
    return out[:rows, :n if with_mask else 1].reshape(*lead, n if with_mask else 1)


def _gpu_layout(rows: int, n: int):
    """Triton: (block rows, padded row length, compiler params), every size a power of two."""
    from jax.experimental.pallas import triton as plt

    width = pl.next_power_of_2(n)
    block_rows = min(pl.next_power_of_2(rows), max(1, 4096 // width))
    warps = min(32, max(4, block_rows * width // 1024))
    return block_rows, width, plt.CompilerParams(num_warps=warps)


def _tpu_layout(rows: int, n: int):
    """Mosaic TPU: (block rows, padded row length, compiler params) on (8, 128) tiles, ~1 MiB a block."""
    from jax.experimental.pallas import tpu as pltpu

    width = -(-n // 128) * 128
    if rows < 8:
        return rows, width, pltpu.CompilerParams(dimension_semantics=("parallel",))
    rows8, block = -(-rows // 8) * 8, min(-(-rows // 8) * 8, max(8, (1 << 18) // width // 8 * 8))
    exact = next(b for b in range(block, 7, -8) if rows8 % b == 0)  # a block that needs no padded rows...
    block_rows = exact if 2 * exact >= block else block  # ...unless it is much smaller than the full one
    return block_rows, width, pltpu.CompilerParams(dimension_semantics=("parallel",))


def _kernel(bits_ref, k_ref, out_ref, *, with_mask: bool):
    """One block: ``bits_ref`` ``[b, w]`` int32, ``k_ref`` ``[b, 1]``; writes the k-th largest's bits
    ``[b, 1]``, or the bool mask ``[b, w]``."""
    bits, k = bits_ref[...], k_ref[...]
    lo = jnp.zeros_like(k)  # invariant: at least k entries >= lo, fewer than k >= hi
    kth = _largest(lambda v: _count(bits >= v) >= k, lo, jnp.full_like(k, _INF_PLUS), steps=31)
    if not with_mask:
        out_ref[...] = kth
        return
    above, tied = bits > kth, bits == kth
    room = k - _count(above)  # how many of the tied entries still fit
    width = bits.shape[-1]
    position = jax.lax.broadcasted_iota(jnp.int32, bits.shape, 1)
    # the cut: the largest p with at most `room` ties before p; rows that keep all their ties start done
    done = _count(tied) <= room
    cut = _largest(lambda p: _count(tied & (position < p)) <= room,
                   jnp.where(done, width, 0), jnp.full_like(k, width + 1))
    out_ref[...] = above | (tied & (position < cut))


def _count(flags: jax.Array) -> jax.Array:
    """Per row of a bool ``[b, w]``, how many are set: ``[b, 1]`` int32."""
    return jnp.sum(flags.astype(jnp.int32), axis=-1, keepdims=True)


def _largest(holds, lo: jax.Array, hi: jax.Array, steps: int | None = None) -> jax.Array:
    """Per row, the largest integer v in ``[lo, hi)`` with ``holds(v)`` (``[b, 1]`` bool), given that
    ``holds`` is true up to some point and false after it, true at ``lo`` and false at ``hi`` (a row with
    hi = lo + 1 is settled). With ``steps``, that many halvings (enough for the widest range); without,
    halving until every row of the block is settled."""
    def halve(bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        ok = holds(mid)
        return jnp.where(ok, mid, lo), jnp.where(ok, hi, mid)

    if steps is not None:
        return jax.lax.fori_loop(0, steps, lambda _, b: halve(b), (lo, hi))[0]
    return jax.lax.while_loop(lambda b: jnp.max(b[1] - b[0]) > 1, halve, (lo, hi))[0]
