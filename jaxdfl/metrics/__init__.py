"""Metrics beyond accuracy (which the engine's evaluate computes for every device on every task).

A(n) is equation n of Paper A (sparse-and-orthogonal LoRA for decentralized multi-task fine-tuning), B(n) of
Paper B (SOFT and TSFA for wireless federated LoRA).
"""

from jaxdfl.metrics.collision import (collision_rate, empirical_collision, neighbourhood_collision,
                                      neighbourhood_collision_rate)
from jaxdfl.metrics.covariance import lora_covariance
from jaxdfl.metrics.orthogonality import gram_offdiagonal, projection_overlap

__all__ = ["collision_rate", "empirical_collision", "gram_offdiagonal", "lora_covariance", "neighbourhood_collision",
           "neighbourhood_collision_rate", "projection_overlap"]
