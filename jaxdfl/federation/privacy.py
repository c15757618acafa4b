"""Client-level differential privacy: clipping each client's update, Gaussian noise at the server (DP-FedAvg,
McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models") or at the device (local DP),
and the privacy budget ε(δ) from Google's dp-accounting library.

Neighbouring federations differ in one client's whole data set. The engine samples K of the N clients
uniformly without replacement (all N when K = N), so the neighbouring relation is *replace one*: swapping a
client's data moves its clipped update anywhere in the ball of radius C, its weighted contribution by at most
2·C·a_j. Noise of std z·C·max_j a_j is then a Gaussian mechanism of noise multiplier z/2 relative to that
sensitivity, which is what the accountant is given (dp-accounting's ``SampledWithoutReplacementDpEvent``
for K < N, a plain ``GaussianDpEvent`` for K = N, both under ``REPLACE_ONE``). Local DP releases each device's
own update, which the receiver sees with its sender: no amplification by sampling, the same z/2 per round in
which a device sends, composed over every round (the worst case of a device chosen every time).

With ``sampling: poisson`` every client takes part independently with probability q and the server divides
by the expected count qN (McMahan et al.'s fixed denominator): adding or removing one client moves the sum by
at most C/(qN), the noise std is z·C/(qN), and the event is ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``
under *add or remove one*.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxdfl.core import Message, Mixed
from jaxdfl.federation.aggregators import flatten


def clip_rows(u: jax.Array, clip_norm: float) -> jax.Array:
    """Each row of ``u`` ``[D, P]`` scaled to norm at most ``clip_norm``."""
    norm = jnp.sqrt(jnp.sum(u * u, 1, keepdims=True))
    return u * jnp.minimum(1.0, clip_norm / jnp.maximum(norm, 1e-12))


def central_dp_mix(w: jax.Array, message: Message, centre, clip_norm: float, noise_multiplier: float,
                   key: jax.Array, fixed_weight: float = 0.0) -> Mixed:
    """DP-FedAvg's aggregate under a server (every row of ``w`` ``[M, M]`` the same weights a_j): the centre
    (the round-start global model; None: 0 for methods that send deltas) plus ``Σ_j a_j clip(u_j)`` and
    Gaussian noise of std ``noise_multiplier · clip_norm · max_j a_j`` on every entry; every device receives
    it. ``fixed_weight`` > 0 (Poisson sampling): every client heard gets a_j = that (1/(qN), McMahan et al.'s
    fixed denominator) whatever the count that came. Dense messages only."""
    values, unflatten = flatten(message.values)
    weight = w[0] if not fixed_weight else jnp.where(w[0] != 0, fixed_weight, 0.0)
    c = jnp.zeros(values.shape[1], values.dtype) if centre is None else flatten(centre)[0][0]
    clipped = clip_rows(values - c, clip_norm)
    total = c + weight @ clipped
    std = noise_multiplier * clip_norm * (fixed_weight or jnp.max(weight))
    noisy = total + std * jax.random.normal(key, total.shape, total.dtype)
    return Mixed(unflatten(jnp.broadcast_to(noisy, values.shape)), None)


def local_dp(values, centre, key: jax.Array, clip_norm: float, noise_multiplier: float):
    """ONE device's message with its update (``values − centre``; None: the values are the update) clipped to
    ``clip_norm`` and Gaussian noise of std ``noise_multiplier · clip_norm`` added to every entry."""
    flat, unflatten = flatten(jax.tree.map(lambda v: v[None], values))
    c = jnp.zeros_like(flat) if centre is None else flatten(jax.tree.map(lambda v: v[None], centre))[0]
    update = clip_rows(flat - c, clip_norm)
    noisy = c + update + noise_multiplier * clip_norm * jax.random.normal(key, flat.shape, flat.dtype)
    return jax.tree.map(lambda v: v[0], unflatten(noisy))


def dp_event(privacy_cfg, num_devices: int, clients_per_round: int):
    """One round's ``dp_accounting`` event (see the module docstring)."""
    import dp_accounting

    if privacy_cfg.mechanism == "central" and privacy_cfg.sampling == "poisson":
        return dp_accounting.PoissonSampledDpEvent(privacy_cfg.sample_rate,
                                                   dp_accounting.GaussianDpEvent(privacy_cfg.noise_multiplier))
    gaussian = dp_accounting.GaussianDpEvent(privacy_cfg.noise_multiplier / 2.0)
    k = clients_per_round or num_devices
    if privacy_cfg.mechanism == "central" and k < num_devices:
        return dp_accounting.SampledWithoutReplacementDpEvent(num_devices, k, gaussian)
    return gaussian


@functools.lru_cache(maxsize=4096)
def epsilon_after(privacy_cfg, num_devices: int, clients_per_round: int, rounds: int) -> float:
    """ε at ``privacy_cfg.delta`` after ``rounds`` rounds (RDP accountant, replace-one relation; inf without
    noise)."""
    from dp_accounting import NeighboringRelation
    from dp_accounting.rdp import RdpAccountant

    if privacy_cfg.noise_multiplier == 0:
        return float("inf")
    poisson = privacy_cfg.mechanism == "central" and privacy_cfg.sampling == "poisson"
    accountant = RdpAccountant(neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE if poisson
                               else NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_event(privacy_cfg, num_devices, clients_per_round), rounds)
    return float(accountant.get_epsilon(privacy_cfg.delta))
