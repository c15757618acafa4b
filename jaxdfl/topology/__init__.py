"""Topologies: who mixes with whom each round, as a mixing matrix.

A(n) is equation n of Paper A (sparse-and-orthogonal LoRA for decentralized multi-task fine-tuning), B(n) of
Paper B (SOFT and TSFA for wireless federated LoRA).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np

from jaxdfl.core import RoundControl
from jaxdfl.federation.availability import sample_online
from jaxdfl.topology import graphs
from jaxdfl.topology.agnes import agnes_clusters
from jaxdfl.topology.circulant import RING_SHIFTS, in_shift_order
from jaxdfl.topology.mixing import drop_senders, mix, mix_dense, mix_tree
from jaxdfl.topology.neighbours import Neighbours, from_edges, isolated, to_dense, widen


class Topology(NamedTuple):
    """``mixing(round) -> W`` ``[M, M]`` float32, deterministic given the config seed. Sparse graphs (ring,
    k-regular, Erdős–Rényi, isolated) also give ``neighbours(round)``: the same W as
    :class:`~jaxdfl.topology.neighbours.Neighbours` lists, drawn and weighted in O(M·D); their ``mixing``
    builds the dense W from those lists only when asked.

    ``active(round)`` gives the sorted indices of the devices that train and send that round (``[K]``,
    K = ``num_active``), or None when every device takes part. ``control(round)`` gives the round's
    :class:`~jaxdfl.core.RoundControl` flags (clusters: ``exchange``, an inter-cluster exchange at the end of
    the round, and ``stored``, experts of other clusters held at its start). ``labels`` ``[M]``: cluster of
    each device.
    """

    name: str
    mixing: Callable[[int], np.ndarray]
    active: Callable[[int], np.ndarray | None] = lambda round_: None
    num_active: int | None = None
    control: Callable[[int], RoundControl] = lambda round_: RoundControl()
    labels: np.ndarray | None = None
    neighbours: Callable[[int], Neighbours] | None = None
    shifts: tuple[int, ...] | None = None  # circulant graphs: column d of the lists is sender (i + shifts[d]) mod M

    @property
    def width(self) -> int | None:
        """D, the columns of round 0's neighbour lists (the widest row and padding), or None when dense."""
        return None if self.neighbours is None else self.neighbours(0).index.shape[1]


def build_topology(topo_cfg, num_devices: int, data_sizes: np.ndarray, seed: int,
                   task_of_device: np.ndarray | None = None, labels: np.ndarray | None = None,
                   online: Callable[[int], np.ndarray] | None = None,
                   poisson: Callable[[int], np.ndarray] | None = None) -> Topology:
    """The topology named by ``topology.name`` (``clusters`` needs the cluster ``labels``, see
    :func:`agnes_clusters`). ``online(round) -> [M]`` bool (availability): a server samples its clients
    among the devices online, anew every round. ``poisson(round) -> [M]`` bool: a server's clients are these
    (each drawn independently; DP-FedAvg's Poisson sampling), a round without one plans no upload.

    Random draws (graph edges, sampled clients) are redrawn every ``resample_every`` rounds (0 = once), each
    from its own seeded generator, so round r's W does not depend on how the run got there (resume-safe).
    """
    m, name = num_devices, topo_cfg.name
    weigh = functools.partial(from_edges, m=m, weights=topo_cfg.weights)

    def per_block(draw: Callable[[np.random.Generator], np.ndarray]) -> Callable[[int], np.ndarray]:
        """``draw`` made once per resample block from that block's own generator, as a function of the round
        (cached: the rounds of one block, and W and the active set of one round, share a single draw)."""
        cached = functools.lru_cache(maxsize=1)(lambda block: draw(np.random.default_rng([seed, 2, block])))
        return lambda round_: cached(round_ // topo_cfg.resample_every if topo_cfg.resample_every else 0)

    def sparse(lists: Callable[[int], Neighbours], shifts: tuple[int, ...] | None = None) -> Topology:
        """A topology of neighbour lists whose ``mixing`` builds the dense W once per draw of the lists."""
        last: list = [None, None]  # the lists of the latest draw, and their dense W

        def mixing(round_: int) -> np.ndarray:
            current = lists(round_)
            if last[0] is not current:
                last[:] = current, to_dense(current)
            return last[1]

        return Topology(name, mixing, neighbours=lists, shifts=shifts)

    if name == "isolated":
        alone = isolated(m)
        return sparse(lambda round_: alone, (0,))
    if name == "ring":
        ring = weigh(graphs.ring_edges(m))
        if m < 3:  # two devices: the next and the previous one are the same
            return sparse(lambda round_: ring)
        ring = in_shift_order(ring, RING_SHIFTS)
        return sparse(lambda round_: ring, RING_SHIFTS)
    if name == "kregular":
        return sparse(per_block(lambda rng: weigh(graphs.random_regular_edges(m, topo_cfg.degree, rng))))
    if name == "erdos_renyi":
        # degrees vary from draw to draw: widths in steps of 8 keep the round program's shapes (and its
        # compilation) from changing with every redraw
        def draw(rng):
            lists = weigh(graphs.erdos_renyi_edges(m, topo_cfg.edge_prob, rng))
            return widen(lists, -(-lists.index.shape[1] // 8) * 8)
        return sparse(per_block(draw))
    if name == "full":
        static = np.full((m, m), 1.0 / m, np.float32)
    elif name == "by_task":
        static = graphs.cluster_average(task_of_device, data_sizes)
    elif name == "matrix":
        static = graphs.load_matrix(topo_cfg.matrix, m)
    else:
        static = None

    if name == "clusters":
        every = topo_cfg.exchange_every
        static = graphs.cluster_average(labels, data_sizes)
        flags = lambda r: RoundControl(exchange=bool(every and (r + 1) % every == 0),  # noqa: E731
                                       stored=float(bool(every and r >= every)))
        return Topology(name, lambda round_: static, control=flags, labels=np.asarray(labels))
    if static is not None:
        return Topology(name, lambda round_: static)
    if name == "server":
        k = topo_cfg.clients_per_round or m
        p = np.asarray(data_sizes, np.float64)
        sample = per_block(lambda rng: np.sort(rng.choice(m, k, replace=False)).astype(np.int32))
        if online is not None and k < m:
            sample = functools.lru_cache(maxsize=1)(
                lambda r: sample_online(np.random.default_rng([seed, 2, r]), online(r), k))
        unbiased = topo_cfg.server_weights == "unbiased"
        mixing = lambda r: graphs.server_average(p, sample(r), unbiased)  # noqa: E731
        if poisson is not None:
            def mixing(r):
                drawn = np.flatnonzero(poisson(r))
                return graphs.server_average(p, drawn, unbiased) if len(drawn) else np.eye(m, dtype=np.float32)
        if k == m:
            return Topology(name, mixing)
        return Topology(name, mixing, sample, k)
    raise ValueError(f"unknown topology {name!r}")  # unreachable: the config's Literal checks names


__all__ = ["Neighbours", "Topology", "agnes_clusters", "build_topology", "drop_senders", "graphs", "mix",
           "mix_dense", "mix_tree", "to_dense"]
