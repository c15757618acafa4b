"""Per-round controllers: Paper B's TSFA (offline rank, online ratio and bandwidth) and OSFA.

A(n) is equation n of Paper A (sparse-and-orthogonal LoRA for decentralized multi-task fine-tuning), B(n) of
Paper B (SOFT and TSFA for wireless federated LoRA).
"""

from jaxdfl.control.server import ServerController, bound_constants, build_controller, initial_queue
from jaxdfl.control.tsfa import (BoundConstants, convergence_bound, delay_per_unit_ratio, initial_ratio,
                                 offline_rank, online_ratio, queue_update)

__all__ = ["BoundConstants", "ServerController", "bound_constants", "build_controller", "convergence_bound",
           "delay_per_unit_ratio", "initial_queue", "initial_ratio", "offline_rank", "online_ratio", "queue_update"]
