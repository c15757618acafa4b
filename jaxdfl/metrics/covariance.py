"""The covariance term of Paper B's convergence analysis (B(12))."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def lora_covariance(factors: dict, weights: jax.Array) -> jax.Array:
    """‖Σ_k p_k B_k A_k − (Σ_k p_k B_k)(Σ_k p_k A_k)‖_F over clients k (B(12)).

    Args:
      factors: ``{layer: {"b": [K, d, r], "a": [K, r, n]}}``, the clients' local LoRA factors.
      weights: ``[K]`` aggregation weights p_k (normalised here to sum to one).

    Returns:
      A scalar: the Frobenius norm over all layers together (the square root of the sum of the layers'
      squared norms). It is 0 when every client holds the same factors.
    """
    p = weights / weights.sum()
    total = jnp.zeros(())
    for layer in factors.values():
        b, a = layer["b"], layer["a"]
        mean_product = jnp.einsum("k,kdr,krn->dn", p, b, a, precision=jax.lax.Precision.HIGHEST)
        product_of_means = jnp.einsum("k,kdr->dr", p, b) @ jnp.einsum("k,krn->rn", p, a)
        total = total + jnp.sum((mean_product - product_of_means) ** 2)
    return jnp.sqrt(total)
