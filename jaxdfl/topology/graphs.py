"""Mixing matrices W ∈ R^{M×M} for every topology (host-side numpy; they enter each round's
program as an input array, so they can change every round and be differentiated through).

Row i of W says how device i averages what it receives: ``y_i = Σ_j W_ij x_j``. Every W here is
row-stochastic; the Metropolis–Hastings ones are also symmetric, hence doubly stochastic.
"""

from __future__ import annotations

import numpy as np


def ring_adjacency(m: int) -> np.ndarray:
    adj = np.zeros((m, m), bool)
    for i in range(m):
        for j in ((i - 1) % m, (i + 1) % m):
            if j != i:
                adj[i, j] = True
    return adj


def erdos_renyi_adjacency(m: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """G(m, p): each unordered pair is an edge independently with probability p."""
    upper = np.triu(rng.random((m, m)) < p, k=1)
    return upper | upper.T


def random_regular_adjacency(m: int, k: int, rng: np.random.Generator, swaps_per_edge: int = 10) -> np.ndarray:
    """A random k-regular simple graph: a circulant k-regular graph randomised by degree-preserving double
    edge swaps (a Markov chain over k-regular graphs). Needs ``k < m`` and ``k·m`` even."""
    if not (0 < k < m and (k * m) % 2 == 0):
        raise ValueError(f"no {k}-regular graph on {m} vertices")
    edges = {(i, (i + s) % m) for i in range(m) for s in range(1, k // 2 + 1)}
    if k % 2:
        edges |= {(i, i + m // 2) for i in range(m // 2)}
    edges = {tuple(sorted(e)) for e in edges}
    edge_list = list(edges)
    for _ in range(swaps_per_edge * len(edge_list)):
        i, j = rng.integers(len(edge_list), size=2)
        (a, b), (c, d) = edge_list[i], edge_list[j]
        if rng.random() < 0.5:
            c, d = d, c
        new1, new2 = tuple(sorted((a, d))), tuple(sorted((c, b)))
        if a == d or c == b or new1 == new2 or new1 in edges or new2 in edges:
            continue
        edges -= {edge_list[i], edge_list[j]}
        edges |= {new1, new2}
        edge_list[i], edge_list[j] = new1, new2
    adj = np.zeros((m, m), bool)
    for a, b in edges:
        adj[a, b] = adj[b, a] = True
    return adj


def metropolis_hastings(adj: np.ndarray) -> np.ndarray:
    """W_ij = 1/(1 + max(deg_i, deg_j)) on edges, W_ii = 1 − Σ_{j≠i} W_ij: symmetric, doubly stochastic."""
    adj = adj & ~np.eye(len(adj), dtype=bool)
    deg = adj.sum(1)
    w = np.where(adj, 1.0 / (1.0 + np.maximum(deg[:, None], deg[None, :])), 0.0)
    w[np.diag_indices_from(w)] = 1.0 - w.sum(1)
    return w.astype(np.float32)


def uniform_weights(adj: np.ndarray) -> np.ndarray:
    """W_ij = 1/(deg_i + 1) over i's neighbours and itself: row-stochastic."""
    closed = adj | np.eye(len(adj), dtype=bool)
    return (closed / closed.sum(1, keepdims=True)).astype(np.float32)


def server_average(weights: np.ndarray, sampled: np.ndarray, unbiased: bool = False) -> np.ndarray:
    """Server aggregation as a mixing matrix ``W = 1 wᵀ``: every client receives the same global model.

    ``unbiased=False`` (FedAvg): ``w_j = p_j / Σ_{k∈S} p_k`` on the sampled set S, rows sum to 1.
    ``unbiased=True`` (Paper B, for deltas): ``w_j = (N/K)·p_j`` with ``p_j = |D_j| / |D|``, whose
    expectation over uniform sampling is p_j. Unsampled clients get weight 0: they send nothing."""
    w = np.zeros(len(weights))
    if unbiased:
        w[sampled] = len(weights) / len(sampled) * weights[sampled] / weights.sum()
    else:
        w[sampled] = weights[sampled] / weights[sampled].sum()
    return np.tile(w, (len(weights), 1)).astype(np.float32)



def cluster_average(labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Block-diagonal W: device i averages over the devices j with ``labels[j] == labels[i]``, itself
    included, with ``W_ij ∝ weights[j]`` (data sizes; the α_j of A(10)). Row-stochastic."""
    same = np.asarray(labels)[:, None] == np.asarray(labels)[None, :]
    w = same * np.asarray(weights, np.float64)[None, :]
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


def load_matrix(path: str, m: int) -> np.ndarray:
    """The mixing matrix ``"w"`` of an .npz file, checked to be ``[m, m]``, non-negative and row-stochastic."""
    from jaxdfl.errors import ConfigError

    try:
        with np.load(path) as f:
            w = np.asarray(f["w"], np.float32)
    except (OSError, KeyError, ValueError) as err:
        raise ConfigError(f"topology.matrix: cannot read a mixing matrix 'w' from {path} ({err})") from None
    if w.shape != (m, m) or (w < 0).any() or not np.allclose(w.sum(1), 1.0, atol=1e-4):
        raise ConfigError(f"topology.matrix: {path} holds a {w.shape} matrix; need [{m}, {m}], non-negative, "
                          "rows summing to 1")
    return w
