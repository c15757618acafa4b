"""Applying a mixing matrix over the device axis: ``y_i = Σ_j W_ij x_j`` for every leaf.

W comes dense (``[M, M]``) or as neighbour lists (:class:`~jaxdfl.topology.neighbours.Neighbours`); every
function here takes either. The dense form is an ``einsum`` over the leading device axis (2·M²·P FLOPs); the
sparse one a gather and a weighted sum (2·M·D·P). When the device axis is sharded over the mesh axis
``"devices"`` XLA turns either into the matching collectives, so the same code runs on 1 or many chips.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from jaxdfl.core import Message, Mixed
from jaxdfl.topology.circulant import roll_mix
from jaxdfl.topology.neighbours import Neighbours, gather_mix


def mix_dense(w: jax.Array, tree):
    """``[M, M]`` × pytree of ``[M, ...]`` → pytree of ``[M, ...]``."""
    chex.assert_shape(w, (w.shape[0], w.shape[0]))
    chex.assert_tree_shape_prefix(tree, (w.shape[0],))
    return jax.tree.map(lambda x: jnp.einsum("ij,j...->i...", w, x, precision=jax.lax.Precision.HIGHEST), tree)


def mix_tree(w: jax.Array | Neighbours, tree, shifts: tuple[int, ...] | None = None, mesh=None):
    """``y_i = Σ_j W_ij x_j`` for every leaf ``[M, ...]``, with W dense or as neighbour lists; lists of a
    circulant graph with their ``shifts`` (columns in shift order) mix by shifts, over ``mesh`` by
    ``ppermute`` (:mod:`jaxdfl.topology.circulant`)."""
    if isinstance(w, Neighbours) and shifts is not None:
        return roll_mix(shifts, w.weight, tree, mesh)
    return gather_mix(w, tree) if isinstance(w, Neighbours) else mix_dense(w, tree)


def mix(w: jax.Array | Neighbours, message: Message, shifts: tuple[int, ...] | None = None, mesh=None) -> Mixed:
    """Mix every device's message (``shifts``, ``mesh``: see :func:`mix_tree`). Sparse messages are
    normalised per entry by the mixed mask mass ``Σ_j W_ij m_j``, so entries a neighbour did not send do not
    shrink the average; where no one sent an entry the value is 0 and ``mass`` is 0 (the method's ``merge``
    decides what to keep there)."""
    mix_tree_ = functools.partial(mix_tree, shifts=shifts, mesh=mesh)
    if message.mask is None:
        return Mixed(mix_tree_(w, message.values), None)
    num = mix_tree_(w, jax.tree.map(lambda v, m: v * m, message.values, message.mask))
    mass = mix_tree_(w, message.mask)
    values = jax.tree.map(lambda n, s: jnp.where(s > 0, n / jnp.where(s > 0, s, 1.0), 0.0), num, mass)
    return Mixed(values, mass)


def drop_senders(w: jax.Array | Neighbours, alive: jax.Array) -> jax.Array | Neighbours:
    """``w`` with the senders that are not ``alive`` (``[M]`` bool) removed and every row renormalised to its
    planned sum; a device that is not alive keeps only itself."""
    if isinstance(w, Neighbours):
        self_only = jnp.zeros_like(w.weight).at[:, 0].set(1.0)
        kept = jnp.where(alive[:, None], w.weight * alive[w.index], self_only)
        return w._replace(weight=_to_row_sums(kept, w.weight))
    kept = jnp.where(alive[:, None], w * alive[None, :], jnp.eye(w.shape[0], dtype=w.dtype))
    return _to_row_sums(kept, w)


def drop_columns(w: jax.Array, keep: jax.Array) -> jax.Array:
    """Dense ``w`` with the senders not in ``keep`` (``[M]`` bool) removed from every row and each row
    renormalised to its planned sum (a server's average over the clients that delivered); a row left empty
    keeps only its own device."""
    kept = w * keep[None, :]
    empty = kept.sum(1, keepdims=True) == 0
    return _to_row_sums(jnp.where(empty, jnp.eye(w.shape[0], dtype=w.dtype), kept), w)


def count_links(w: jax.Array | Neighbours, server: bool = False) -> jax.Array:
    """Messages W carries: sender → receiver pairs with a non-zero weight between two devices; under a
    ``server`` (every row the same) one upload per client heard."""
    if server:
        return heard(w).sum()
    if isinstance(w, Neighbours):
        return jnp.sum((w.weight != 0) & (w.index != jnp.arange(w.num_devices)[:, None]))
    return jnp.sum((w != 0) & ~jnp.eye(w.shape[0], dtype=bool))


def _to_row_sums(kept: jax.Array, planned: jax.Array) -> jax.Array:
    """``kept`` with each row scaled to the sum of that row of ``planned`` (rows summing to 0 left as they are)."""
    total = kept.sum(1, keepdims=True)
    return kept * planned.sum(1, keepdims=True) / jnp.where(total != 0, total, 1.0)


def links(w: jax.Array | Neighbours) -> jax.Array | Neighbours:
    """W in the same form with every non-zero weight set to 1: :func:`mix_tree` with it counts, for each
    device, what its in-neighbours (itself included) hold."""
    if isinstance(w, Neighbours):
        return w._replace(weight=(w.weight != 0).astype(jnp.float32))
    return (w != 0).astype(jnp.float32)


def heard(w: jax.Array | Neighbours) -> jax.Array:
    """``[M]`` bool: another device gives device j a non-zero weight (j's message is used by someone)."""
    if isinstance(w, Neighbours):
        m = w.num_devices
        used = (w.weight != 0) & (w.index != jnp.arange(m)[:, None])
        return jnp.zeros(m, jnp.int32).at[w.index.ravel()].add(used.ravel().astype(jnp.int32)) > 0
    return jnp.any((w * (1.0 - jnp.eye(w.shape[0]))) != 0, axis=0)


def row(w: jax.Array | Neighbours, i: int) -> jax.Array:
    """Row i of W, dense ``[M]``."""
    if isinstance(w, Neighbours):
        return jnp.zeros(w.num_devices, w.weight.dtype).at[w.index[i]].add(w.weight[i])
    return w[i]


def num_linked(w: jax.Array | Neighbours) -> jax.Array:
    """``[M]``: how many devices (itself included) device i averages with a non-zero weight."""
    return (links(w).weight if isinstance(w, Neighbours) else links(w)).sum(1)
