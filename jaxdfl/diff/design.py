"""What a study can learn, as unconstrained parameters mapped to feasible designs.

* mixing: logits ``[M, M]`` over a candidate graph → a row-stochastic W by a masked softmax over each row
  (default), or a doubly stochastic one by Sinkhorn iterations;
* power: ``[M]`` → each device's total transmit power p_max·sigmoid(u), so it never exceeds the budget;
* bandwidth: logits ``[M, M]`` → each sender's shares of its band over its planned links (softmax per row);
* positions: ``[M, 2]`` → device coordinates inside the network's disk of radius R, r·u/√(R² + |u|²)·R/r
  (:func:`place`: the identity near the centre, never past the edge).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LEARNABLE = ("mixing", "power", "bandwidth", "positions")


def masked_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax over each row's entries where ``mask`` is true (zero elsewhere)."""
    z = jnp.where(mask, logits, -jnp.inf)
    return jnp.where(mask, jax.nn.softmax(z, axis=-1), 0.0)


def sinkhorn(logits: jax.Array, mask: jax.Array, iterations: int = 30) -> jax.Array:
    """A doubly stochastic matrix with support ``mask`` (symmetric, diagonal included): exp(logits) scaled by
    alternating row and column normalisations (Sinkhorn–Knopp), in log space for stability."""
    z = jnp.where(mask, logits, -jnp.inf)

    def normalise(z, _):
        z = z - jax.nn.logsumexp(z, axis=1, keepdims=True)
        return z - jax.nn.logsumexp(z, axis=0, keepdims=True), None

    z, _ = jax.lax.scan(normalise, z, None, length=iterations)
    return jnp.where(mask, jnp.exp(z), 0.0)


def mixing_matrix(logits: jax.Array, candidates: jax.Array, kind: str = "softmax") -> jax.Array:
    """``[M, M]`` mixing matrix over ``candidates`` (bool ``[M, M]``; the diagonal is always a candidate)."""
    mask = candidates | jnp.eye(candidates.shape[0], dtype=bool)
    return sinkhorn(logits, mask) if kind == "sinkhorn" else masked_softmax(logits, mask)


def transmit_power(u: jax.Array, power_max: float) -> jax.Array:
    """``[M]`` total transmit power of each device, in (0, p_max)."""
    return power_max * jax.nn.sigmoid(u)


def link_entropy(w: jax.Array) -> jax.Array:
    """Mean over devices of the entropy of each row of W: how spread each device's weight is over its links
    (its exponential is the effective number of neighbours, self included). The sparsity penalty on a learned
    W: a row-stochastic W has Σ_j |W_ij| = 1 whatever its links, so an L1 penalty would be constant."""
    return -jnp.mean(jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0), axis=1))


def place(u: jax.Array, radius: float) -> jax.Array:
    """``[M, 2]`` positions inside the disk of ``radius``: R·u/√(R² + |u|²) (≈ u near the centre)."""
    return radius * u / jnp.sqrt(radius ** 2 + jnp.sum(u ** 2, axis=-1, keepdims=True))


def unplace(positions, radius: float):
    """The parameters :func:`place` maps to ``positions`` (each strictly inside the disk)."""
    r2 = jnp.minimum(jnp.sum(positions ** 2, axis=-1, keepdims=True), (0.999 * radius) ** 2)
    return positions * radius / jnp.sqrt(radius ** 2 - r2)
