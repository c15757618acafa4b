"""Sparsifiers for LoRA updates (Paper B §III, B(3)–B(7); docs/methods.md, "Paper B — SOFT"), behind one interface.

A selector is ``select(update, factors, ratio, key) -> mask`` for ONE adapted layer, where ``update`` and
``factors`` are ``{"b": [d, r], "a": [r, k]}`` (the error-compensated update to send, and the client's
local factors after training), ``ratio`` is the sparsification ratio O ∈ [0, 1] (may be traced), and
``mask`` is ``{"b", "a"}`` of 0/1. The per-layer budget is q = round(O·r·(d+k)) entries.

* ``soft``:  importance s_i = ‖B[:,i]‖²‖A[i,:]‖² (B(3)); o = :func:`allocate` (s, q, cap=d+k); keep the
  top-o_i entries of component i, the vector [B[:,i]; A[i,:]] of the update.
* ``tlora``: the top-q entries of |update| over B and A together.
* ``rlora``: q entries uniformly at random.
* ``slora``: whole rank components i < ⌊O·r⌋.
* ``ilora``: everything (no sparsification).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxdfl.sparse.topk import descending_rank, random_k_mask, top_k_mask, top_k_per_row

Selector = Callable[[dict, dict, jax.Array, jax.Array], dict]


def components(layer: dict) -> jax.Array:
    """``{"b": [d, r], "a": [r, k]}`` → ``[r, d + k]``: row i is [B[:, i]; A[i, :]]."""
    return jnp.concatenate([layer["b"].T, layer["a"]], axis=1)


def from_components(rows: jax.Array, d: int) -> dict:
    """Inverse of :func:`components`."""
    return {"b": rows[:, :d].T, "a": rows[:, d:]}


def budget(layer: dict, ratio) -> jax.Array:
    """q = round(O · r · (d + k)) entries for one layer."""
    d, r = layer["b"].shape
    k = layer["a"].shape[1]
    return jnp.round(ratio * r * (d + k)).astype(jnp.int32)


def allocate(importance: jax.Array, budget, cap, iterations: int = 60) -> jax.Array:
    """Split an integer ``budget`` over components in proportion to ``importance`` ``[r]``, each ≤ ``cap``.

    Continuous water-filling first: x_i = min(cap, λ·s_i) with Σ x_i = budget (λ by bisection), so budget a
    capped component cannot use flows to the others. Then largest-remainder rounding: floors, plus one
    for the components with the largest fractional parts, until the counts sum to ``budget`` exactly
    (whenever budget ≤ r·cap; otherwise every component gets ``cap``). Components of zero importance get
    something only when all others are capped. Returns int32 ``[r]``.
    """
    s = jnp.asarray(importance, jnp.float32)
    s = jnp.where(s.sum() > 0, s, jnp.ones_like(s))
    s = s + 1e-9 * s.max()  # zero-importance components take overflow only once the rest are capped
    budget = jnp.minimum(jnp.asarray(budget, jnp.float32), cap * s.shape[0])
    filled = lambda lam: jnp.minimum(cap, lam * s).sum()  # noqa: E731
    lo, hi = jnp.zeros(()), jnp.asarray(budget / s.min() + 1.0, jnp.float32)

    def bisect(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        return jnp.where(filled(mid) < budget, mid, lo), jnp.where(filled(mid) < budget, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iterations, bisect, (lo, hi))
    x = jnp.minimum(cap, hi * s)
    base = jnp.minimum(jnp.floor(x), cap).astype(jnp.int32)
    short = jnp.round(budget).astype(jnp.int32) - base.sum()
    fraction = jnp.where(base < cap, x - base, -1.0)
    return base + (descending_rank(fraction) < short).astype(jnp.int32)


def importance(factors: dict) -> jax.Array:
    """s_i = ‖B[:, i]‖² · ‖A[i, :]‖² for each rank component (B(3))."""
    return jnp.sum(factors["b"] ** 2, axis=0) * jnp.sum(factors["a"] ** 2, axis=1)


def soft(update, factors, ratio, key):
    d = update["b"].shape[0]
    rows = components(update)
    counts = allocate(importance(factors), budget(update, ratio), rows.shape[1])
    return from_components(top_k_per_row(rows, counts), d)


def tlora(update, factors, ratio, key):
    d = update["b"].shape[0]
    return from_components(top_k_mask(components(update), budget(update, ratio)), d)


def rlora(update, factors, ratio, key):
    d = update["b"].shape[0]
    rows = components(update)
    return from_components(random_k_mask(key, rows.shape, budget(update, ratio), rows.dtype), d)


def slora(update, factors, ratio, key):
    d, r = update["b"].shape
    keep = (jnp.arange(r) < jnp.floor(ratio * r)).astype(update["b"].dtype)
    return from_components(jnp.broadcast_to(keep[:, None], (r, components(update).shape[1])), d)


def ilora(update, factors, ratio, key):
    return jax.tree.map(jnp.ones_like, update)


SELECTORS: dict[str, Selector] = {"soft": soft, "tlora": tlora, "rlora": rlora, "slora": slora, "ilora": ilora}
