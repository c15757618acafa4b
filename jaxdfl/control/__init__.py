"""Per-round controllers: Paper B's TSFA (offline rank, online ratio and bandwidth) and OSFA."""

from jaxdfl.control.server import ServerController, bound_constants, build_controller, initial_queue
from jaxdfl.control.tsfa import (BoundConstants, convergence_bound, delay_per_unit_ratio, initial_ratio,
                                 offline_rank, online_ratio, queue_update)

__all__ = ["BoundConstants", "ServerController", "bound_constants", "build_controller", "convergence_bound",
           "delay_per_unit_ratio", "initial_queue", "initial_ratio", "offline_rank", "online_ratio", "queue_update"]
