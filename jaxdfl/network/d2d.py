"""Paper A's device-to-device wireless network (A §III, A(7), A(8), A(25)).

Devices sit in a disk and may move every round. The channel from device j to device i is
h_ji = ρ_ji · d_ji^(−α) with Rayleigh power fading ρ ~ Exp(1) redrawn every round. A device shares its
bandwidth W equally over the ‖u‖ links it serves (OFDMA), so a link's rate is (W/‖u‖)·log2(1 + p·h/σ²) and
sending ``bits`` takes l = bits / rate (A(8)). The least power that meets a delay bound Γ is A(25),
:func:`min_power`. A sender whose links do not all fit its power budget p_max drops its most expensive links
(:func:`serve_links`): those messages are lost that round (outages), and mixing renormalises over what
arrived (:func:`deliver`).

Conventions: matrices indexed ``[sender, receiver]`` here (a mixing matrix W is ``[receiver, sender]``).
Every function is jnp and jittable; delays, powers and energies are differentiable in the bandwidth, the
powers, the gains and the positions (the choice of which links are served is not).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class LinkBudget(NamedTuple):
    """The radio resources of every device (the same for all; A §III-B, (11a)–(11b)).

    Attributes:
      bandwidth: W, Hz, each device's band, split equally over the links it serves.
      delay_bound: Γ, s, the longest a round's model transmission may take (A(11a)).
      power_max: p_max, W, a device's total transmit power over its links (A(11b)).
      noise: σ², W, noise power.
      path_loss_exp: α in h = ρ·d^(−α).
    """

    bandwidth: float
    delay_bound: float
    power_max: float
    noise: float
    path_loss_exp: float


def disk_positions(key: jax.Array, num_devices: int, radius: float) -> jax.Array:
    """``[M, 2]`` positions drawn uniformly in a disk of ``radius`` centred at the origin."""
    k_r, k_theta = jax.random.split(key)
    r = radius * jnp.sqrt(jax.random.uniform(k_r, (num_devices,)))
    theta = 2 * jnp.pi * jax.random.uniform(k_theta, (num_devices,))
    return jnp.stack([r * jnp.cos(theta), r * jnp.sin(theta)], axis=1)


def random_walk(key: jax.Array, positions: jax.Array, step: float, radius: float) -> jax.Array:
    """One round of movement: a Gaussian step of std ``step`` per coordinate, reflected back into the disk
    (a point that leaves at distance ρ > R from the centre lands at 2R − ρ on the same ray)."""
    moved = positions + step * jax.random.normal(key, positions.shape)
    rho = jnp.linalg.norm(moved, axis=1, keepdims=True)
    inside = jnp.clip(2 * radius - rho, 0.0, radius)
    return jnp.where(rho > radius, moved * inside / jnp.maximum(rho, 1e-12), moved)


def trajectory(num_devices: int, radius: float, move_std: float, seed: int,
               start: np.ndarray | None = None) -> Callable[[int], np.ndarray]:
    """``positions(round) -> [M, 2]``: drawn uniformly in the disk at round 0 (or ``start``), then one
    :func:`random_walk` step per round (``move_std`` 0: static). Each step has its own key from ``seed`` and
    the round, so a round's positions do not depend on how a run got there (resume-safe); computed rounds are
    cached."""
    key = jax.random.key(seed)
    first = disk_positions(jax.random.fold_in(key, 3), num_devices, radius) if start is None else start
    path = [np.asarray(first)]
    step = jax.jit(random_walk, static_argnums=(2, 3))

    def positions(round_: int) -> np.ndarray:
        if move_std == 0:
            return path[0]
        while len(path) <= round_:
            k = jax.random.fold_in(jax.random.fold_in(key, 4), len(path))
            path.append(np.asarray(step(k, path[-1], move_std, radius)))
        return path[round_]

    return positions


def distances(positions: jax.Array, min_distance: float = 1.0) -> jax.Array:
    """``[M, M]`` pairwise distances, floored at ``min_distance`` (the path-loss model's reference range)."""
    diff = positions[:, None, :] - positions[None, :, :]
    return jnp.maximum(jnp.sqrt(jnp.sum(diff ** 2, axis=-1) + 1e-12), min_distance)


def channel_gains(key: jax.Array | None, dist: jax.Array, path_loss_exp: float) -> jax.Array:
    """h = ρ·d^(−α) with ρ ~ Exp(1) per directed link (``key`` None: the mean, ρ = 1), same shape as ``dist``."""
    mean = dist ** (-path_loss_exp)
    return mean if key is None else mean * jax.random.exponential(key, dist.shape)


def ofdma_rate(power, gain, bandwidth, links, noise):
    """Rate of one link, bit/s, the denominator of A(8): (W/‖u‖)·log2(1 + p·h/σ²). Elementwise."""
    return bandwidth / links * jnp.log1p(power * gain / noise) / jnp.log(2.0)


def link_delay(bits, power, gain, bandwidth, links, noise):
    """A(8): the time to send ``bits`` over one of ``links`` equal OFDMA shares at ``power``. Elementwise."""
    return bits / ofdma_rate(power, gain, bandwidth, links, noise)


def min_power(bits, links, bandwidth, delay_bound, gain, noise):
    """A(25), Lemma 1: the least transmit power that sends ``bits`` within ``delay_bound`` over one of
    ``links`` equal shares of ``bandwidth``:

        p* = σ²/h · (2^(bits·‖u‖/(W·Γ)) − 1).

    Elementwise over broadcastable arrays; at p*, :func:`link_delay` equals Γ. Overflows to inf (never
    feasible) for rates far beyond the channel.
    """
    return noise / gain * jnp.expm1(bits * links / (bandwidth * delay_bound) * jnp.log(2.0))


def compute_cost(compute_per_param, params, examples, batch_size):
    """A(7): a device's local computation c = ε·Q·N/B for Q trained parameters, N examples, batch size B."""
    return compute_per_param * params * examples / batch_size


def serve_links(planned: jax.Array, bits: jax.Array, gain: jax.Array, budget: LinkBudget):
    """Which planned links each sender can serve within Γ and p_max, and at what power.

    A sender serving k links needs Σ p* = (2^(bits·k/(WΓ)) − 1)·Σ σ²/h over them (A(25)); both factors grow
    with k, so the links it can afford are its k* cheapest (lowest σ²/h), k* the largest k that fits p_max.
    It drops the rest (outages) and splits W over the k* it serves.

    Args:
      planned: ``[M, M]`` bool, ``planned[j, i]`` device j means to send to device i (no self-links).
      bits: ``[M]`` message size of each sender.
      gain: ``[M, M]`` channel gains h_ji this round.
      budget: the :class:`LinkBudget`.

    Returns:
      ``(served, power)``: ``[M, M]`` bool, a subset of ``planned``; ``[M, M]`` the power p*_ji on each
      served link (0 elsewhere). Every served link's delay is exactly Γ.
    """
    m = planned.shape[0]
    cost = jnp.where(planned, budget.noise / gain, jnp.inf)  # power per unit of (2^x − 1)
    order = jnp.argsort(cost, axis=1)
    rank = jnp.argsort(order, axis=1)  # rank[j, i]: position of link j→i among j's links, cheapest first
    cumulative = jnp.cumsum(jnp.take_along_axis(cost, order, axis=1), axis=1)  # [M, k]: the k cheapest
    k = jnp.arange(1, m + 1, dtype=jnp.float32)
    # Σ over the k cheapest links of A(25) with ‖u‖ = k: Σ σ²/h enters where σ²/h does
    need = min_power(bits[:, None], k[None, :], budget.bandwidth, budget.delay_bound, 1.0, cumulative)
    count = jnp.sum(need <= budget.power_max, axis=1)  # the k that fit form a prefix: need increases in k
    served = planned & (rank < count[:, None])
    links = jnp.maximum(count, 1).astype(jnp.float32)[:, None]
    power = jnp.where(served, min_power(bits[:, None], links, budget.bandwidth, budget.delay_bound, gain,
                                        budget.noise), 0.0)
    return served, power


class LinkReport(NamedTuple):
    """What the air did to one round's messages (every field a scalar over all devices).

    ``links`` planned transmissions (sender → receiver pairs), ``delivered`` those that arrived, ``outages``
    those lost (links = delivered + outages), ``energy_j`` Σ p·l over served links, ``max_delay_s`` the
    slowest delivered link (Γ at minimum power; 0 when nothing was sent).
    """

    links: jax.Array
    delivered: jax.Array
    outages: jax.Array
    energy_j: jax.Array
    max_delay_s: jax.Array


def deliver(w: jax.Array, bits: jax.Array, gain: jax.Array, budget: LinkBudget) -> tuple[jax.Array, LinkReport]:
    """Apply one round's channel to a planned mixing matrix.

    Args:
      w: ``[M, M]`` planned mixing matrix (receiver i averages ``W_ij`` of sender j's message).
      bits: ``[M]`` each sender's message size (bits that must meet Γ).
      gain: ``[M, M]`` this round's channel gains, ``[sender, receiver]``.
      budget: the :class:`LinkBudget`.

    Returns:
      ``(w_delivered, report)``: W with lost links zeroed and rows renormalised to their planned sums (each
      device keeps its own weight, so a row never empties), and a :class:`LinkReport`.
    """
    off = 1.0 - jnp.eye(w.shape[0], dtype=w.dtype)
    planned = (w * off).T != 0
    served, power = serve_links(planned, bits, gain, budget)
    w_delivered = expected_deliver(w, served.astype(w.dtype))  # delivered with probability 1 or 0
    links = jnp.maximum(jnp.sum(served, axis=1, keepdims=True), 1).astype(jnp.float32)
    delay = jnp.where(served, link_delay(bits[:, None], jnp.where(served, power, 1.0), gain, budget.bandwidth,
                                         links, budget.noise), 0.0)
    report = LinkReport(planned.sum(), served.sum(), (planned & ~served).sum(), jnp.sum(power * delay),
                        jnp.max(delay, initial=0.0))
    return w_delivered, report


def broadcast_cost(send: jax.Array, bits: jax.Array, gain: jax.Array, budget: LinkBudget):
    """Delay and energy of transfers that are not bound by Γ (e.g. the inter-cluster exchange): each sender
    splits p_max and W equally over its links and takes as long as the rates allow (A(8)).

    ``send`` ``[M, M]`` bool ``[sender, receiver]``; returns ``(max_delay_s, energy_j)`` scalars.
    """
    links = jnp.maximum(jnp.sum(send, axis=1, keepdims=True), 1).astype(jnp.float32)
    power = budget.power_max / links
    delay = jnp.where(send, link_delay(bits[:, None], power, gain, budget.bandwidth, links, budget.noise), 0.0)
    return jnp.max(delay, initial=0.0), jnp.sum(power * delay)


def delivery_probability(bits, bandwidth_per_link, delay_bound, power_per_link, dist, noise, path_loss_exp):
    """P(a link delivers ``bits`` within Γ) under Rayleigh fading at a fixed transmit power, elementwise.

    The link meets Γ iff its rate (W_link)·log2(1 + p·ρ·d^(−α)/σ²) ≥ bits/Γ, i.e. iff
    ρ ≥ (2^(bits/(W_link·Γ)) − 1)·σ²·d^α / p; with ρ ~ Exp(1) that has probability
    exp(−(2^(bits/(W_link·Γ)) − 1)·σ²·d^α / p). Smooth in the power, the bandwidth and the distance. The
    exponent is capped at 2^115 (a probability of 0 either way) so that gradients stay finite where a link
    has no chance.
    """
    rate_need = jnp.minimum(bits / (bandwidth_per_link * delay_bound), 115.0)  # bits per Hz per Γ
    need = jnp.expm1(rate_need * jnp.log(2.0)) * noise * dist ** path_loss_exp
    return jnp.exp(-need / power_per_link)


def expected_deliver(w: jax.Array, probability: jax.Array) -> jax.Array:
    """The expected delivered mixing matrix: each planned off-diagonal weight W_ij times the probability that
    sender j's message reaches i (``probability`` ``[sender, receiver]``), rows renormalised to their planned
    sums as :func:`deliver` does. (The ratio of expectations, not the expectation of the ratio: a relaxation
    whose bias vanishes as delivery becomes certain or impossible.)"""
    off = 1.0 - jnp.eye(w.shape[0], dtype=w.dtype)
    kept = w * (off * probability.T + (1.0 - off))
    kept_sum = jnp.sum(kept, axis=1, keepdims=True)
    return kept * jnp.sum(w, axis=1, keepdims=True) / jnp.where(kept_sum != 0, kept_sum, 1.0)
