"""TSFA: Paper B's two-stage control (B §IV, Algs. 2–3). All jnp and jittable.

* Offline (Alg. 2, Lemma 2): choose the LoRA rank r before training, with the channel replaced by its mean.
* Online (B(21)–B(31)): each round, choose the sparsification ratio O and the FDMA bandwidth shares from the
  observed SNRs and the virtual delay queue Q, minimising the drift-plus-penalty Q·D(O) + V·γ(r, O, K).
* OSFA is the online stage alone with a fixed r.

Notation: ``dims`` = Σ_l (d_l + ℓ_l) over adapted layers; a rank-r update at ratio O carries
v·O·r·dims bits (v = ``bits_per_param``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdfl.network.fdma import fdma_bandwidth, spectral_efficiency


class BoundConstants(NamedTuple):
    """Constants of the convergence bound (B Theorem 1): smoothness S, LoRA error H, singular-value bound W,
    heterogeneity φ, gradient bound G, learning rate η, local steps E, largest rank r_max, clients N."""

    S: float
    H: float
    W: float
    phi: float
    G: float
    eta: float
    E: float
    r_max: float
    N: float


def convergence_bound(rank, ratio, sampled, c: BoundConstants) -> jax.Array:
    """γ(r, O, K), the per-round term of the bound (B(14)):

    2S²H(r_max−r)W² + 4S²φrW² + ηSE²G² + 8(N−K)/(K(N−1))·η²S²E²G² + 4N(1−O)²/(K O⁴)·rS²W⁴
    + E(E−1)(2E−1)S²η²G²/6.
    """
    S2, W2, G2, E = c.S ** 2, c.W ** 2, c.G ** 2, c.E
    return (2 * S2 * c.H * (c.r_max - rank) * W2 + 4 * S2 * c.phi * rank * W2 + c.eta * c.S * E ** 2 * G2
            + 8 * (c.N - sampled) / (sampled * (c.N - 1)) * c.eta ** 2 * S2 * E ** 2 * G2
            + 4 * c.N * (1 - ratio) ** 2 / (sampled * ratio ** 4) * rank * S2 * W2 ** 2
            + E * (E - 1) * (2 * E - 1) * S2 * c.eta ** 2 * G2 / 6)


def delay_per_unit_ratio(snr, rank, *, dims, bits_per_param, bandwidth) -> jax.Array:
    """κ with D(O) = κ·O: under the optimal shares (B(31)) every sampled client's delay is
    v·O·r·dims·Σ_j 1/log2(1+SNR_j) / B, linear in O. ``snr`` ``[K]``."""
    return bits_per_param * rank * dims * jnp.sum(1.0 / spectral_efficiency(snr)) / bandwidth


def initial_ratio(rank, consts: BoundConstants, mean_snr, *, sampled, dims, bits_per_param, bandwidth,
                  delay_target, ratio_min) -> jax.Array:
    """Lemma 2 with D_th restored (docs/methods.md, "Paper B — TSFA"): O⁰(r) = clip(N·D_th/(A·K·r), O_min, 1),
    A = Σ_k v·dims / (B·log2(1 + SNR̄_k)) over all N clients (``mean_snr`` ``[N]``)."""
    a = jnp.sum(bits_per_param * dims / (bandwidth * spectral_efficiency(mean_snr)))
    return jnp.clip(consts.N * delay_target / (a * sampled * rank), ratio_min, 1.0)


def offline_rank(consts: BoundConstants, mean_snr, *, sampled, dims, bits_per_param, bandwidth, delay_target,
                 ratio_min) -> tuple[jax.Array, jax.Array]:
    """Alg. 2: r* = argmin_{1≤r≤r_max} γ(r, O⁰(r), K). Returns ``(rank, initial_ratio)``; ties → smaller r."""
    ranks = jnp.arange(1, int(consts.r_max) + 1, dtype=jnp.float32)
    ratios = initial_ratio(ranks, consts, mean_snr, sampled=sampled, dims=dims, bits_per_param=bits_per_param,
                           bandwidth=bandwidth, delay_target=delay_target, ratio_min=ratio_min)
    best = jnp.argmin(convergence_bound(ranks, ratios, sampled, consts))
    return (best + 1).astype(jnp.int32), ratios[best]


def online_ratio(queue, V, rank, snr, consts: BoundConstants, *, dims, bits_per_param, bandwidth, ratio_min,
                 iterations: int = 60) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Solve the per-slot problem P3 (B(29)) for the sampled clients' SNRs ``snr`` ``[K]``:
    minimise Q·D(O) + V·γ(r, O, K) over O ∈ [O_min, 1], with the optimal shares (B(31)).

    The objective is convex in O (B(30)): its derivative Q·κ − 2V·C·(1−O)(2−O)/O⁵ (C = 4N·r·S²W⁴/K)
    increases, so bisection on the derivative finds the minimiser (to ~1e-18 relative after 60 halvings).

    Returns ``(ratio, bandwidth_shares [K], delay)``.
    """
    k = snr.shape[0]
    kappa = delay_per_unit_ratio(snr, rank, dims=dims, bits_per_param=bits_per_param, bandwidth=bandwidth)
    c = 4 * consts.N * rank * consts.S ** 2 * consts.W ** 4 / k
    slope = lambda o: queue * kappa - 2 * V * c * (1 - o) * (2 - o) / o ** 5  # noqa: E731

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        return jnp.where(slope(mid) < 0, mid, lo), jnp.where(slope(mid) < 0, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iterations, bisect, (jnp.asarray(ratio_min, jnp.float32), jnp.ones(())))
    ratio = jnp.where(slope(jnp.asarray(ratio_min, jnp.float32)) >= 0, ratio_min, 0.5 * (lo + hi))
    return ratio, fdma_bandwidth(snr), kappa * ratio


def queue_update(queue, delay, delay_target) -> jax.Array:
    """Virtual queue Q^{t+1} = max(Q^t + D^t − D_th, 0) (B(21))."""
    return jnp.maximum(queue + delay - delay_target, 0.0)
