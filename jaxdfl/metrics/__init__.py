"""Metrics (collision rate, covariance, orthogonality, spectral entropy, communication accounting) land here
with the papers' methods; accuracy of every device on every task is computed by the engine's evaluate."""
