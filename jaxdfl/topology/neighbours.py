"""Sparse mixing: each device's in-neighbours as a padded list, so mixing costs O(M·D·P), not O(M²·P).

A :class:`Neighbours` holds, for every receiver i, the senders it averages and their weights,
``y_i = Σ_d weight[i, d] · x[index[i, d]]`` (the rows of a mixing matrix W with their zeros left out). Column
0 is always the device itself (its weight W_ii may be 0); rows with fewer than D neighbours are padded with
i's own index and weight 0, so padding adds nothing. Built on the host from edge lists in O(M·D) (never a
dense ``[M, M]``), it enters the round program as two arrays and mixes by a loop of D gathers and
multiply-adds (:func:`gather_mix`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Neighbours(NamedTuple):
    """``index`` ``[..., M, D]`` int32 senders of each receiver (column 0: itself); ``weight`` ``[..., M, D]``
    float32 their mixing weights W_ij (0 on padding). Leading axes stack rounds."""

    index: np.ndarray | jax.Array
    weight: np.ndarray | jax.Array

    @property
    def num_devices(self) -> int:
        return self.index.shape[-2]


def from_edges(edges: np.ndarray, m: int, weights: str = "metropolis") -> Neighbours:
    """Mixing weights of an undirected simple graph, as neighbour lists.

    Args:
      edges: ``[E, 2]`` int pairs (a, b), a ≠ b, each unordered pair at most once.
      m: number of devices.
      weights: ``"metropolis"``: W_ij = 1/(1 + max(deg_i, deg_j)) on edges, W_ii = 1 − Σ_{j≠i} W_ij
        (symmetric, doubly stochastic); ``"uniform"``: W_ij = 1/(deg_i + 1) over i's neighbours and itself
        (row-stochastic). The same numbers as :func:`~jaxdfl.topology.graphs.metropolis_hastings` and
        :func:`~jaxdfl.topology.graphs.uniform_weights` on the dense adjacency.
    """
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    receiver = np.concatenate([edges[:, 0], edges[:, 1]])
    sender = np.concatenate([edges[:, 1], edges[:, 0]])
    order = np.lexsort((sender, receiver))
    receiver, sender = receiver[order], sender[order]
    deg = np.bincount(receiver, minlength=m)
    width = 1 + int(deg.max(initial=0))
    slot = np.arange(len(receiver)) - np.concatenate([[0], np.cumsum(deg)[:-1]])[receiver] + 1
    index = np.repeat(np.arange(m, dtype=np.int64)[:, None], width, axis=1)
    index[receiver, slot] = sender
    weight = np.zeros((m, width), np.float64)
    if weights == "metropolis":
        weight[receiver, slot] = 1.0 / (1.0 + np.maximum(deg[receiver], deg[sender]))
        weight[:, 0] = 1.0 - weight.sum(1)
    else:
        weight[receiver, slot] = (1.0 / (deg + 1.0))[receiver]
        weight[:, 0] = 1.0 / (deg + 1.0)
    return Neighbours(index.astype(np.int32), weight.astype(np.float32))


def widen(lists: Neighbours, width: int) -> Neighbours:
    """``lists`` (any leading axes, numpy or jax) padded to ``width`` columns (each row's own index, weight 0):
    the same W."""
    extra = width - lists.index.shape[-1]
    if extra <= 0:
        return lists
    xp = jnp if isinstance(lists.index, jax.Array) else np
    own = xp.broadcast_to(xp.arange(lists.num_devices, dtype=xp.int32)[:, None], (*lists.index.shape[:-1], extra))
    return Neighbours(xp.concatenate([lists.index, own], -1),
                      xp.concatenate([lists.weight, xp.zeros(own.shape, lists.weight.dtype)], -1))


def stack(rounds: list[Neighbours]) -> Neighbours:
    """Several rounds' lists stacked ``[R, M, D]``, padded to the widest."""
    width = max(lists.index.shape[-1] for lists in rounds)
    return Neighbours(*(np.stack(xs) for xs in zip(*(widen(lists, width) for lists in rounds))))


def isolated(m: int) -> Neighbours:
    """Every device keeps its own model: W = I."""
    return Neighbours(np.arange(m, dtype=np.int32)[:, None], np.ones((m, 1), np.float32))


def to_dense(w) -> np.ndarray | jax.Array:
    """The ``[..., M, M]`` mixing matrix of ``w`` (a dense ``w`` is returned as it is)."""
    if not isinstance(w, Neighbours):
        return w
    m, lead = w.num_devices, w.index.shape[:-2]
    index = w.index.reshape(-1, m, w.index.shape[-1])
    batch = np.arange(len(index))[:, None, None]
    rows = np.arange(m)[None, :, None]
    if isinstance(w.index, jax.Array):
        dense = jnp.zeros((len(index), m, m), w.weight.dtype).at[batch, rows, index].add(w.weight.reshape(index.shape))
    else:
        dense = np.zeros((len(index), m, m), w.weight.dtype)
        np.add.at(dense, (batch, rows, index), w.weight.reshape(index.shape))
    return dense.reshape(*lead, m, m)


def gather_mix(w: Neighbours, tree):
    """``y_i = Σ_d weight[i, d] · x[index[i, d]]`` for every leaf ``[M, ...]`` of ``tree``.

    A loop over the D columns, each a gather of ``[M, ...]`` rows and a multiply-add: memory stays that of
    one leaf (a single gather of ``[M, D, ...]`` was 3–4× slower on CPU and needs D times the memory)."""

    def one(x):
        def column(d, total):
            weight = w.weight[:, d].reshape(-1, *[1] * (x.ndim - 1)).astype(x.dtype)
            return total + weight * x[w.index[:, d]]

        return jax.lax.fori_loop(0, w.index.shape[1], column, jnp.zeros_like(x))

    return jax.tree.map(one, tree)
