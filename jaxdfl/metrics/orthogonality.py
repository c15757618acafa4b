"""How orthogonal the devices' static projections are (A(16)), and how orthogonal B's columns become under
SOFT's regulariser (B(2))."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def projection_overlap(a: jax.Array) -> jax.Array:
    """Mean over device pairs i ≠ j of ‖A_i A_jᵀ‖_F / (‖A_i‖_F ‖A_j‖_F).

    Args:
      a: ``[devices, r, k]`` one layer's projections. Needs at least two devices.

    Returns:
      A scalar in [0, 1]: 0 for mutually orthogonal row spaces; about 1/√k for independent Gaussian A's.
    """
    m = a.shape[0]
    cross = jnp.einsum("irk,jsk->ijrs", a, a)
    norms = jnp.linalg.norm(a.reshape(m, -1), axis=1)
    ratio = jnp.sqrt(jnp.sum(cross ** 2, axis=(2, 3))) / (norms[:, None] * norms[None, :])
    return jnp.sum(ratio * (1.0 - jnp.eye(m))) / (m * (m - 1))


def gram_offdiagonal(b):
    """‖BᵀB − diag(BᵀB)‖_F / ‖BᵀB‖_F for one layer's ``b`` ``[d, r]``: 0 when B's columns are orthogonal (what
    B(2)'s penalty drives towards), √(1 − 1/r) for r equal columns; 0 for B = 0."""
    xp = np if isinstance(b, np.ndarray) else jnp  # NumPy in, NumPy out (float64 on the host)
    gram = b.T @ b
    off = gram - xp.diag(xp.diag(gram))
    return xp.linalg.norm(off) / xp.maximum(xp.linalg.norm(gram), 1e-30)
