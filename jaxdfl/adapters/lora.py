"""Vanilla LoRA (Hu et al., 2021; A(2), A(9), A(10)): both factors trained, both sent, factor-wise averaged.

For a linear map W0 ∈ R^{d×k} (``in = k``, ``out = d``) the adapter adds ``(alpha/r)·B A x`` with
``A`` ``[r, k]`` ~ N(0, a_std²) (default a_std = 1/√k) and ``B`` ``[d, r]`` = 0 at init.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from jaxdfl.adapters.base import AdapterState, LowRankConfig, Method, send_dense, take_mixed


def lora_delta(a: jax.Array, b: jax.Array, x: jax.Array, scale: float) -> jax.Array:
    """``scale · B A x`` for ``x`` ``[..., k]``, ``a`` ``[r, k]``, ``b`` ``[d, r]`` → ``[..., d]``."""
    return scale * ((x @ a.T) @ b.T)


def init_factors(key, layers: dict[str, tuple[int, int]], rank: int, a_std: float | None) -> dict:
    """``{name: {"a": [r, in] Gaussian, "b": [out, r] zeros}}``."""
    keys = jax.random.split(key, len(layers))
    out = {}
    for k, (name, (fan_in, fan_out)) in zip(keys, layers.items()):
        std = a_std if a_std is not None else fan_in ** -0.5
        out[name] = {"a": std * jax.random.normal(k, (rank, fan_in)), "b": jnp.zeros((fan_out, rank))}
    return out


def lora(rank: int = 4, alpha: float = 8.0, a_std: float | None = None) -> Method:
    scale = alpha / rank

    def init(key, layers, stats=None):
        return AdapterState(init_factors(key, layers, rank, a_std))

    def delta(state, name, x):
        p = state.params.get(name)
        return None if p is None else lora_delta(p["a"], p["b"], x, scale)

    return Method(init, delta, send_dense, take_mixed)


@dataclass(frozen=True)
class LoraConfig(LowRankConfig):
    """``lora``: A and B trained and sent every round, averaged factor by factor."""

    name: Literal["lora"] = "lora"

    def make(self, batch_size: int) -> Method:
        return lora(self.rank, self.alpha, self.a_std)
