"""Circulant graphs (ring, torus rows, any W whose column d holds sender ``(i + s_d) mod M``): mixing by shifts.

For these graphs the neighbour gather is a sum of shifted copies of the device axis,
``y_i = Σ_d weight[i, d] · x_{(i + s_d) mod M}``. On one chip a shift is a contiguous copy. With the device
axis sharded over the mesh axis ``"devices"``, :func:`roll_mix` runs under ``jax.shard_map`` and each chip
receives from its neighbour chip only the ``|s|`` boundary rows it needs, by ``lax.ppermute``: a ring moves
one device's message per chip and round, where a gather over a sharded axis lets XLA move whole shards.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from jaxdfl.topology.neighbours import Neighbours

DEVICE_AXIS = "devices"  # the mesh axis of the device axis (jaxdfl.sim.mesh)
RING_SHIFTS = (0, 1, -1)  # column order of a ring's lists: itself, the next device, the previous one


def in_shift_order(lists: Neighbours, shifts: tuple[int, ...]) -> Neighbours:
    """``lists`` of a circulant graph with columns reordered so column d holds sender ``(i + s_d) mod M``
    (the same W). Raises ValueError when a row has a sender at none of ``shifts``."""
    m = lists.num_devices
    offset = (lists.index - np.arange(m)[:, None]) % m  # [M, D] each sender's shift
    want = np.asarray(shifts) % m
    if len(set(want.tolist())) != len(shifts):
        raise ValueError(f"shifts {shifts} repeat a sender among {m} devices")
    index = (np.arange(m)[:, None] + want[None, :]) % m
    weight = np.zeros((m, len(shifts)), lists.weight.dtype)
    for d in range(lists.index.shape[1]):  # D columns, each a vectorised placement
        slot = np.argmax(offset[:, d, None] == want[None, :], axis=1)
        found = offset[:, d] == want[slot]
        if not found.all():
            raise ValueError(f"sender shifts {sorted(set(offset[~found, d].tolist()))} are not among {shifts}")
        np.add.at(weight, (np.arange(m), slot), lists.weight[:, d])
    return Neighbours(index.astype(np.int32), weight)


def roll_mix(shifts: tuple[int, ...], weight: jax.Array, tree, mesh: jax.sharding.Mesh | None = None):
    """``y_i = Σ_d weight[i, d] · x_{(i + s_d) mod M}`` for every leaf ``[M, ...]`` (``weight`` ``[M, D]``).
    The same numbers as the gather of :func:`~jaxdfl.topology.neighbours.gather_mix` over lists in shift
    order (the columns are summed in the same order). ``mesh``: the device axis is sharded over its
    ``"devices"`` axis (shifts then run as ``ppermute`` of boundary rows)."""
    chips = 1 if mesh is None else mesh.shape[DEVICE_AXIS]

    def one(x):
        m = x.shape[0]
        shift = (functools.partial(_sharded_shift, mesh=mesh) if chips > 1 and m % chips == 0
                 and max(abs(s) for s in shifts) < m // chips else lambda x, s: jnp.roll(x, -s, axis=0))
        total = jnp.zeros_like(x)
        for d, s in enumerate(shifts):
            total = total + weight[:, d].reshape(-1, *[1] * (x.ndim - 1)).astype(x.dtype) * shift(x, s)
        return total

    return jax.tree.map(one, tree)


def _sharded_shift(x: jax.Array, s: int, mesh) -> jax.Array:
    """``x_{(i + s) mod M}`` for every i, with ``|s|`` below a chip's share of the device axis: each chip
    keeps its rows shifted and gets the ``|s|`` rows it lacks from the next (s > 0) or previous chip."""
    if s == 0:
        return x
    n = mesh.shape[DEVICE_AXIS]

    def local(block):
        if s > 0:  # chip k needs the first s rows of chip k + 1
            incoming = jax.lax.ppermute(block[:s], DEVICE_AXIS, [(j, (j - 1) % n) for j in range(n)])
            return jnp.concatenate([block[s:], incoming])
        incoming = jax.lax.ppermute(block[s:], DEVICE_AXIS, [(j, (j + 1) % n) for j in range(n)])
        return jnp.concatenate([incoming, block[:s]])

    spec = PartitionSpec(DEVICE_AXIS)
    return jax.shard_map(local, mesh=mesh, in_specs=spec, out_specs=spec, axis_names={DEVICE_AXIS})(x)
