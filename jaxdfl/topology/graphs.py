"""Graphs and mixing matrices (host-side numpy; a round's W enters its program as an input array, so it can
change every round and be differentiated through).

Row i of W says how device i averages what it receives: ``y_i = Σ_j W_ij x_j``. Every W here is
row-stochastic; the Metropolis–Hastings ones are also symmetric, hence doubly stochastic. Random graphs are
drawn as edge lists (``*_edges``), which :mod:`jaxdfl.topology.neighbours` weighs in O(M·D); the dense
forms (``*_adjacency``, :func:`metropolis_hastings`, :func:`uniform_weights`) build the same W as an
``[M, M]`` array, for a ``topology.matrix`` file of one's own and as the reference the lists are tested
against.
"""

from __future__ import annotations

import numpy as np


def adjacency(edges: np.ndarray, m: int) -> np.ndarray:
    """The dense ``[m, m]`` bool adjacency of an undirected edge list ``[E, 2]``."""
    adj = np.zeros((m, m), bool)
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    adj[edges[:, 0], edges[:, 1]] = adj[edges[:, 1], edges[:, 0]] = True
    return adj


def ring_edges(m: int) -> np.ndarray:
    """``[E, 2]``: i — i+1 around the ring (E = m for m ≥ 3, 1 for m = 2, 0 for m = 1)."""
    pairs = np.stack([np.arange(m), (np.arange(m) + 1) % m], 1)
    return np.unique(np.sort(pairs[pairs[:, 0] != pairs[:, 1]], axis=1), axis=0)


def ring_adjacency(m: int) -> np.ndarray:
    return adjacency(ring_edges(m), m)


# Up to this many devices an Erdős–Rényi graph is drawn from one uniform per vertex pair, as jaxdfl 0.1 did,
# so the graphs behind published results stay the same; above it, by sampling the edge count and then the
# edges (O(M·D) instead of O(M²); 4,096² uniforms take about 0.2 s and 128 MB).
DENSE_DRAW_LIMIT = 4096


def erdos_renyi_edges(m: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """G(m, p) as an edge list ``[E, 2]`` (a < b): each unordered pair is an edge independently with
    probability p."""
    if m <= DENSE_DRAW_LIMIT:
        return np.argwhere(np.triu(rng.random((m, m)) < p, k=1))
    pairs = m * (m - 1) // 2
    k = np.sort(rng.choice(pairs, size=rng.binomial(pairs, p), replace=False))  # row-major upper-triangle slots
    # slot k lies in row a with start(a) <= k < start(a + 1), start(a) = a·(2m − a − 1)/2
    a = np.floor(((2 * m - 1) - np.sqrt((2.0 * m - 1) ** 2 - 8.0 * k)) / 2).astype(np.int64)
    start = lambda a: a * (2 * m - a - 1) // 2  # noqa: E731
    a -= start(a) > k
    a += k >= start(a + 1)
    return np.stack([a, k - start(a) + a + 1], 1)


def erdos_renyi_adjacency(m: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """G(m, p): each unordered pair is an edge independently with probability p."""
    return adjacency(erdos_renyi_edges(m, p, rng), m)


def random_regular_edges(m: int, k: int, rng: np.random.Generator, swaps_per_edge: int = 10) -> np.ndarray:
    """A random k-regular simple graph ``[m·k/2, 2]``: a circulant k-regular graph randomised by
    degree-preserving double edge swaps (a Markov chain over k-regular graphs). Needs ``k < m`` and ``k·m``
    even."""
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
    return np.array(sorted(edges), np.int64).reshape(-1, 2)


def random_regular_adjacency(m: int, k: int, rng: np.random.Generator, swaps_per_edge: int = 10) -> np.ndarray:
    return adjacency(random_regular_edges(m, k, rng, swaps_per_edge), m)


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
