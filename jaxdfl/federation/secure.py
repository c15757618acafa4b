"""Secure aggregation, simulated: the pairwise masks of Bonawitz et al. 2017 ("Practical Secure Aggregation for
Privacy-Preserving Machine Learning") that hide each client's update from the server yet cancel in the sum.

Each sampled client j quantises its weighted contribution ``a_j v_j`` to fixed point (``frac_bits``
fractional bits, in int32 arithmetic modulo 2³²) and adds, for every other sampled client i, a mask drawn
from a seed the two share: +m_ij if j < i, −m_ij if j > i. The server adds what arrives: the masks of two
clients that both delivered cancel exactly (modulo 2³²), and for a client sampled but not delivered (offline,
dropped) the survivors' masks with it are recomputed from its seed, which the survivors hold in shares, and
taken off. What is left is the exact sum of the quantised contributions, so the aggregate equals the plain
one to within ``K · 2^-(frac_bits+1)`` per entry; it must stay below ``2^(31 − frac_bits)`` in magnitude.

The message counts follow the protocol's pairwise part (no self-masks): every sampled client advertises two
public keys and sends an encrypted share of its seed to every other sampled client (through the server), and
every survivor sends one share per dropped client for the recovery; each key or share counts
:data:`KEY_BITS`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdfl.core import Message, Mixed
from jaxdfl.federation.aggregators import flatten

KEY_BITS = 256


def pair_masks(key: jax.Array, holders: jax.Array, partners: jax.Array, size: int) -> jax.Array:
    """``[M, size]`` uint32: each of the ``holders``' (``[M]`` bool) sum of signed pairwise masks with the
    ``partners`` (``[M]`` bool) other than itself, modulo 2³² (the pair (i, j) adds +m_ij to the smaller index
    and −m_ij to the larger); zero rows for devices not holding."""
    m = holders.shape[0]

    def mask_of(i):
        def with_(j):
            lo, hi = jnp.minimum(i, j), jnp.maximum(i, j)
            bits = jax.random.bits(jax.random.fold_in(jax.random.fold_in(key, lo), hi), (size,), jnp.uint32)
            use = holders[i] & partners[j] & (i != j)
            return jnp.where(use, jnp.where(j > i, bits, jnp.uint32(0) - bits), jnp.uint32(0))

        return jnp.sum(jax.vmap(with_)(jnp.arange(m)), 0, dtype=jnp.uint32)

    return jax.lax.map(mask_of, jnp.arange(m))


def secure_mix(planned: jax.Array, w: jax.Array, message: Message, key: jax.Array, frac_bits: int
               ) -> tuple[Mixed, dict]:
    """The server's aggregate ``Σ_j a_j v_j`` under pairwise masking (every row of ``w`` ``[M, M]``, the
    delivered weights a_j, the same; ``planned`` the weights before losses, whose senders hold masks).
    Returns the mixed values (every device receives them) and ``{"secagg_bits": ...}``, the protocol's
    messages beyond the masked updates."""
    values, unflatten = flatten(message.values)
    sampled, delivered = planned[0] != 0, w[0] != 0
    scale = 2.0 ** frac_bits
    fixed = jnp.round(w[0][:, None] * values * scale).astype(jnp.int32).view(jnp.uint32)
    sent = fixed + pair_masks(key, sampled, sampled, values.shape[1])  # uniform noise to the server
    total = jnp.sum(jnp.where(delivered[:, None], sent, jnp.uint32(0)), 0, dtype=jnp.uint32)
    # recovery: a survivor's masks with a dropped client do not cancel; the server rebuilds them from the
    # dropped clients' seeds (shared among the survivors) and takes them off
    dropped = sampled & ~delivered
    leftover = jnp.sum(pair_masks(key, delivered, dropped, values.shape[1]), 0, dtype=jnp.uint32)
    aggregate = (total - leftover).view(jnp.int32).astype(jnp.float32) / scale
    k, lost, survivors = sampled.sum(), dropped.sum(), delivered.sum()
    bits = k * 2 * KEY_BITS + k * jnp.maximum(k - 1, 0) * KEY_BITS + survivors * lost * KEY_BITS
    return Mixed(unflatten(jnp.broadcast_to(aggregate, values.shape)), None), {"secagg_bits": bits.astype(jnp.float32)}
