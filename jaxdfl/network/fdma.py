"""Paper B's uplink channel (B §II-C): clients in a disk around the server, Rayleigh fading, FDMA.

Channel: h_k = s_k · q_k^{−γ} with |s_k|² ~ Exp(1) redrawn every round, so SNR_k = P·|s_k|²·q_k^{−2γ}/σ².
A client given a share b_k of bandwidth B sends at rate b_k·B·log2(1 + SNR_k).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def client_distances(key: jax.Array, num_clients: int, radius: float, min_distance: float = 1.0) -> jax.Array:
    """``[N]`` distances of clients placed uniformly in a disk of ``radius`` around the server."""
    return jnp.maximum(radius * jnp.sqrt(jax.random.uniform(key, (num_clients,))), min_distance)


def mean_snr(distances: jax.Array, power: float, noise: float, path_loss_exp: float) -> jax.Array:
    """E[SNR_k] = P · q_k^{−2γ} / σ² (E|s|² = 1)."""
    return power * distances ** (-2.0 * path_loss_exp) / noise


def draw_snr(key: jax.Array, distances: jax.Array, power: float, noise: float, path_loss_exp: float) -> jax.Array:
    """One round's SNRs: the mean SNR times an Exp(1) Rayleigh power fade per client."""
    return mean_snr(distances, power, noise, path_loss_exp) * jax.random.exponential(key, distances.shape)


def spectral_efficiency(snr: jax.Array) -> jax.Array:
    """log2(1 + SNR) in bit/s/Hz, accurate for tiny SNRs too (log1p), elementwise."""
    return jnp.log1p(snr) / jnp.log(2.0)


def fdma_bandwidth(snr: jax.Array) -> jax.Array:
    """Bandwidth shares b_k of the sampled clients (B(31)): b_k = (1/log2(1+SNR_k)) / Σ_j 1/log2(1+SNR_j).

    ``snr`` ``[K]`` → ``[K]``, summing to 1. These shares give every client the same delay, so the round's
    delay (the slowest client's) is as small as it can be.
    """
    inverse_rate = 1.0 / spectral_efficiency(snr)
    return inverse_rate / inverse_rate.sum()


def fdma_delays(snr: jax.Array, shares: jax.Array, bits: jax.Array, bandwidth: float) -> jax.Array:
    """Per-client delays D_k = bits / (b_k·B·log2(1 + SNR_k)), ``[K]``."""
    return bits / (shares * bandwidth * spectral_efficiency(snr))
