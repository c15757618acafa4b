"""What Paper A's method reads from the frozen base model before training (A(20)–A(22), A(26)): each adapted
layer's spectral entropy on a device's own data, the layer-wise densities it implies under a budget, and the
device's mean input direction per layer.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["LayerStats", "allocate_sparsity", "calibration", "spectral_entropy"]


class LayerStats(NamedTuple):
    """What the frozen base model shows one device about its own data, captured once before training.

    Attributes:
      direction: ``{name: [k]}`` unit mean input h̄/‖h̄‖ of each adapted linear map.
      entropy: ``[layers]`` spectral entropy of each adapted map on the device's data (A(21)).
      examples: the device's number of training examples N_i.
    """

    direction: dict
    entropy: jax.Array
    examples: jax.Array


def spectral_entropy(w0: jax.Array, h: jax.Array) -> jax.Array:
    """Spectral entropy of a layer for a task, A(20)–(21).

    C = HᵀH (``[k, k]``), σ = singular values of W0·C (``[d, k]``), p = σ/Σσ, ℋ = −Σ p log p.

    Args:
      w0: ``[d, k]`` the layer's base weight (maps k → d).
      h: ``[n, k]`` its inputs H⁰ on a batch of the task's data (rows of zeros do not change the result).

    Returns:
      A scalar in [0, log min(d, k)].
    """
    c = h.T @ h
    sigma = jnp.linalg.svd(w0 @ c, compute_uv=False)
    p = sigma / jnp.maximum(sigma.sum(), jnp.finfo(sigma.dtype).tiny)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def allocate_sparsity(entropy: jax.Array, budget, sizes: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Layer-wise densities from spectral entropy under a budget, A(22) with min instead of max:

        x_l = min(λ · softmax(ℋ/τ)_l, size_l),  Σ_l x_l = Q,  s_l = x_l / size_l.

    λ = Q when no layer saturates (A(22) itself); budget a saturated layer cannot hold is spread over the
    others in proportion to their softmax share (water-filling). λ is found exactly: sorting layers by the
    λ at which each saturates, the answer is the one segment whose λ is consistent.

    Args:
      entropy: ``[layers]`` spectral entropies.
      budget: Q, the number of B entries to train (scalar).
      sizes: ``[layers]`` d_l·r_l, the size of each layer's B.
      temperature: τ of the softmax.

    Returns:
      ``[layers]`` densities s with 0 ≤ s ≤ 1 and Σ s·sizes = Q whenever Q ≤ Σ sizes (all ones otherwise).
    """
    sizes = jnp.asarray(sizes, jnp.float32)
    share = jax.nn.softmax(jnp.asarray(entropy, jnp.float32) / temperature)
    budget = jnp.minimum(jnp.asarray(budget, jnp.float32), sizes.sum())
    saturate_at = sizes / share  # λ beyond which layer l is full
    order = jnp.argsort(saturate_at)
    t, p, z = saturate_at[order], share[order], sizes[order]
    full_before = jnp.concatenate([jnp.zeros(1), jnp.cumsum(z)[:-1]])  # the j cheapest layers saturated
    share_after = jnp.flip(jnp.cumsum(jnp.flip(p)))  # Σ_{l≥j} share
    lam = (budget - full_before) / share_after
    lower = jnp.concatenate([jnp.zeros(1), t[:-1]])
    consistent = (lam >= lower * (1 - 1e-6)) & (lam <= t * (1 + 1e-6))
    lam = lam[jnp.argmax(consistent)]
    return jnp.minimum(lam * share, sizes) / sizes


def _unit(v: jax.Array) -> jax.Array:
    return v / jnp.maximum(jnp.linalg.norm(v), 1e-12)


def calibration(examples: int) -> Callable:
    """A :attr:`~jaxdfl.core.Method.calibrate` that reads :class:`LayerStats` from a device's first
    ``examples`` examples: ``calibrate(forward, base, layers, x, n)``, ``x`` ``[n_max, ...]``, ``n`` real ones.

    The inputs H⁰ of every adapted map are taken through the model's hook (rows of padding examples are
    zero); W0 is ``base[name]["w"]`` transposed to ``[d, k]``.

    Under ``vmap`` every layer's SVD would be one batched LAPACK call, and XLA's CPU runtime can deadlock when
    two of them run at once on its intra-op thread pool (seen on 2 cores: both pool threads parked in
    LAPACK's batch loop, waiting for each other). So each layer's input is made to depend on the previous
    entropy (H or −H, which have the same singular values; an optimisation barrier alone is compiled away):
    the SVDs run in turn and the values are unchanged.
    """

    def calibrate(forward, base, layers, x, n):
        x = x[:examples]
        valid = (jnp.arange(x.shape[0]) < n).astype(jnp.float32)
        seen = {}

        def hook(name, h):
            if name in layers:  # inputs carry the batch first: [batch, ..., in]
                rows = h * valid.reshape(-1, *([1] * (h.ndim - 1)))
                seen[name] = rows.reshape(-1, h.shape[-1])
            return None

        forward(base, x, hook)
        rows = valid.sum() * (next(iter(seen.values())).shape[0] // x.shape[0])
        entropies, previous = [], jnp.zeros((), jnp.float32)
        for name in layers:
            h = seen[name]
            previous = spectral_entropy(base[name]["w"].T, jnp.where(previous >= 0, h, -h))
            entropies.append(previous)
        direction = {name: _unit(seen[name].sum(0) / jnp.maximum(rows, 1)) for name in layers}
        return LayerStats(direction, jnp.stack(entropies), n.astype(jnp.float32))

    return calibrate
