"""The air interface a round program applies between encoding and mixing (Paper A's device-to-device links):
``apply(key, w, bits, crossing, positions) -> (delivered w, metrics)``.

* :class:`Channel`: this round's Rayleigh fading drawn, the least power that meets Γ (A(25)), and the links a
  sender cannot afford lost (:func:`~jaxdfl.network.d2d.deliver`). What a run simulates.
* :class:`ExpectedChannel`: every link delivered with its probability at a given power and bandwidth share
  (:func:`~jaxdfl.network.d2d.delivery_probability`), W replaced by its expectation. Smooth in the powers,
  the bandwidth shares and the positions, so :mod:`jaxdfl.diff` can learn them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdfl.network.d2d import (LinkBudget, broadcast_cost, channel_gains, deliver, delivery_probability, distances,
                                expected_deliver)


class Channel(NamedTuple):
    """Sampled fading and hard outages; ``positions`` ``[M, 2]`` come with each round's inputs."""

    budget: LinkBudget
    min_distance: float

    def apply(self, key, w, bits, crossing, positions):
        """``w`` ``[M, M]`` planned mixing, ``bits`` ``[M]`` each sender's message (bound by Γ), ``crossing``
        ``[receiver, sender]`` the exchange's transfers (not bound by Γ). Returns the delivered W and the
        :class:`~jaxdfl.network.d2d.LinkReport` fields (energy including the exchange) and
        ``exchange_delay_s``."""
        gain = channel_gains(key, distances(positions, self.min_distance), self.budget.path_loss_exp)
        w, report = deliver(w, bits, gain, self.budget)
        x_delay, x_energy = broadcast_cost(crossing.T, bits, gain, self.budget)
        return w, report._replace(energy_j=report.energy_j + x_energy)._asdict() | {"exchange_delay_s": x_delay}


class ExpectedChannel(NamedTuple):
    """Expected delivery at fixed transmit powers. ``power`` ``[M]`` each sender's total power (split equally
    over its planned links; None: p_max); ``shares`` ``[M, M]`` each sender's bandwidth shares over its links,
    rows summing to one (None: equal OFDMA shares); ``positions`` ``[M, 2]`` overriding the round's (None: the
    round's). A sender transmits over the whole window Γ, so its energy per round is its power times Γ."""

    budget: LinkBudget
    min_distance: float
    power: jax.Array | None = None
    shares: jax.Array | None = None
    positions: jax.Array | None = None

    def apply(self, key, w, bits, crossing, positions):
        b = self.budget
        positions = positions if self.positions is None else self.positions
        planned = (w * (1.0 - jnp.eye(w.shape[0], dtype=w.dtype))).T != 0  # [sender, receiver]
        links = jnp.maximum(planned.sum(1, keepdims=True), 1).astype(w.dtype)
        power = self.power
        if power is None:  # each device's budget (a scalar, or one per device from a design file)
            power = jnp.broadcast_to(jnp.ravel(jnp.asarray(b.power_max, w.dtype)), (w.shape[0],))
        shares = 1.0 / links if self.shares is None else self.shares
        p = delivery_probability(bits[:, None], b.bandwidth * shares, b.delay_bound, power[:, None] / links,
                                 distances(positions, self.min_distance), b.noise, b.path_loss_exp)
        p = jnp.where(planned, p, 0.0)
        sends = planned.any(1) | crossing.T.any(1)
        return expected_deliver(w, p), {
            "links": planned.sum(), "delivered": p.sum(), "outages": planned.sum() - p.sum(),
            "energy_j": jnp.sum(jnp.where(sends, power, 0.0)) * b.delay_bound,
            "max_delay_s": jnp.asarray(b.delay_bound, w.dtype), "exchange_delay_s": jnp.zeros((), w.dtype)}
