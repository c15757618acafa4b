"""Applying a mixing matrix over the device axis: ``y_i = Σ_j W_ij x_j`` for every leaf.

Written as an ``einsum`` over the leading device axis; when that axis is sharded over the mesh axis
``"devices"`` XLA turns it into the matching collectives, so the same code runs on 1 or many chips.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxdfl.core import Message, Mixed


def mix_dense(w: jax.Array, tree):
    """``[M, M]`` × pytree of ``[M, ...]`` → pytree of ``[M, ...]``."""
    chex.assert_shape(w, (w.shape[0], w.shape[0]))
    chex.assert_tree_shape_prefix(tree, (w.shape[0],))
    return jax.tree.map(lambda x: jnp.einsum("ij,j...->i...", w, x, precision=jax.lax.Precision.HIGHEST), tree)


def mix(w: jax.Array, message: Message) -> Mixed:
    """Mix every device's message. Sparse messages are normalised per entry by the mixed mask mass
    ``Σ_j W_ij m_j``, so entries a neighbour did not send do not shrink the average; where no one sent an
    entry the value is 0 and ``mass`` is 0 (the method's ``merge`` decides what to keep there)."""
    if message.mask is None:
        return Mixed(mix_dense(w, message.values), None)
    num = mix_dense(w, jax.tree.map(lambda v, m: v * m, message.values, message.mask))
    mass = mix_dense(w, message.mask)
    values = jax.tree.map(lambda n, s: jnp.where(s > 0, n / jnp.where(s > 0, s, 1.0), 0.0), num, mass)
    return Mixed(values, mass)
