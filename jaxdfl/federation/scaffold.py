"""SCAFFOLD's control variates (Karimireddy et al. 2020, option II) after a round, for the round program."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdfl.sim.state import Variates, where_devices
from jaxdfl.topology.mixing import heard


def scaffold_variates(variates: Variates, start, trained, lr: float, w, active, steps, real):
    """SCAFFOLD's control variates after a round (option II) and the entries the delivering clients sent for
    them. ``start``, ``trained`` are the training devices' params ``[K, ...]`` before and after local training,
    ``steps`` their local steps; only clients the server heard (``w``) take their new c_i and count."""
    m = jax.tree.leaves(variates.client)[0].shape[0]
    pick = (lambda a: a) if active is None else (lambda a: a[active])
    steps = jnp.asarray(steps, jnp.float32)

    def updated(ci, c, x, y):
        scale = 1.0 / (steps.reshape(-1, *[1] * (x.ndim - 1)) * lr)
        return ci - c[None] + (x - y) * scale

    new = jax.tree.map(updated, jax.tree.map(pick, variates.client), variates.server, start, trained)
    if active is not None:
        new = jax.tree.map(lambda full, sub: full.at[active].set(sub), variates.client, new)
    delivered = heard(w) & (jnp.arange(m) < (m if real is None else real))
    client = where_devices(delivered, new, variates.client)
    n = m if real is None else real
    server = jax.tree.map(lambda c, new_ci, ci: c + jnp.sum(jnp.where(
        delivered.reshape(-1, *[1] * c.ndim), new_ci - ci, 0.0), 0) / n, variates.server, new, variates.client)
    per_client = sum(x[0].size for x in jax.tree.leaves(variates.client))
    return Variates(client, server), delivered.sum() * float(per_client)
