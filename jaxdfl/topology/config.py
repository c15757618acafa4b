"""The ``topology`` config section: who mixes with whom (:func:`jaxdfl.topology.build_topology`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxdfl.schema import require


@dataclass(frozen=True)
class TopologyConfig:
    """Who talks to whom each round, as a mixing matrix (docs/methods.md, "The engine")."""

    # by_task: devices that share a task average together (blocks of W), weighted by data size
    # clusters: Paper A's AGNES clusters under topology.s_max and the network's power/delay budget
    # matrix: the mixing matrix "w" of an .npz file (topology.matrix), every round (a learned design, say)
    name: Literal["server", "ring", "full", "kregular", "erdos_renyi", "isolated", "by_task", "clusters",
                  "matrix"] = "ring"
    clients_per_round: int = 0  # "server": K of N sampled per round; 0 = all
    degree: int = 2  # "kregular": neighbours per device
    edge_prob: float = 0.3  # "erdos_renyi": probability of each edge
    resample_every: int = 1  # random graphs and client sampling: draw anew every n rounds; 0 = draw once
    weights: Literal["metropolis", "uniform"] = "metropolis"  # device-to-device mixing weights
    # "server": normalized = FedAvg weights p_k / Σ_sampled p; unbiased = (N/K)·p_k on deltas (Paper B)
    server_weights: Literal["normalized", "unbiased"] = "normalized"
    s_max: float = 0.05  # "clusters": collision cap S_max of every cluster, per layer (A(19))
    exchange_every: int = 5  # "clusters": inter-cluster expert exchange every n rounds; 0 = never
    matrix: str = ""  # "matrix": an .npz file holding "w" [devices, devices] (jaxdfl learn writes design.npz)
    # how rounds apply W: "sparse" gathers each device's neighbours (ring, kregular, erdos_renyi, isolated),
    # "dense" multiplies by the [M, M] matrix; "auto" picks sparse where it is faster (docs/methods.md)
    mixing_form: Literal["auto", "sparse", "dense"] = "auto"

    def __post_init__(self):
        require(self.clients_per_round >= 0, "clients_per_round", f"must be >= 0, got {self.clients_per_round}")
        require(self.degree >= 1, "degree", f"must be >= 1, got {self.degree}")
        require(0 <= self.edge_prob <= 1, "edge_prob", f"must be in [0, 1], got {self.edge_prob}")
        require(self.resample_every >= 0, "resample_every", f"must be >= 0, got {self.resample_every}")
        require(0 <= self.s_max <= 1, "s_max", f"must be in [0, 1], got {self.s_max}")
        require(self.exchange_every >= 0, "exchange_every", f"must be >= 0, got {self.exchange_every}")
        require(self.name != "matrix" or self.matrix, "matrix", "topology.name: matrix needs a file: "
                "topology.matrix: path/to/design.npz")
