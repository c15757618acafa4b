"""Per-round controllers: Paper B's TSFA (offline rank, online ratio and bandwidth) and OSFA."""

from jaxdfl.control.tsfa import (BoundConstants, convergence_bound, delay_per_unit_ratio, initial_ratio,
                                 offline_rank, online_ratio, queue_update)

from jaxdfl.control.server import ServerController, build_controller, effective_config

__all__ = ["ServerController", "build_controller", "effective_config", "BoundConstants", "convergence_bound", "delay_per_unit_ratio", "initial_ratio", "offline_rank",
           "online_ratio", "queue_update"]
