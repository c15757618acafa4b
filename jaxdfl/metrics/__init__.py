"""Metrics beyond accuracy (which the engine's evaluate computes for every device on every task)."""

from jaxdfl.metrics.collision import (collision_rate, empirical_collision, neighbourhood_collision,
                                      neighbourhood_collision_rate)
from jaxdfl.metrics.covariance import lora_covariance
from jaxdfl.metrics.orthogonality import projection_overlap

__all__ = ["collision_rate", "empirical_collision", "lora_covariance", "neighbourhood_collision",
           "neighbourhood_collision_rate", "projection_overlap"]
