"""Metrics beyond accuracy (which the engine's evaluate computes for every device on every task)."""

from jaxdfl.metrics.covariance import lora_covariance

__all__ = ["lora_covariance"]
