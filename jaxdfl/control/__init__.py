"""Per-round controllers: Paper B's TSFA (offline rank, online ratio and bandwidth) and OSFA."""

from jaxdfl.control.tsfa import (BoundConstants, convergence_bound, delay_per_unit_ratio, initial_ratio,
                                 offline_rank, online_ratio, queue_update)

__all__ = ["BoundConstants", "convergence_bound", "delay_per_unit_ratio", "initial_ratio", "offline_rank",
           "online_ratio", "queue_update"]
