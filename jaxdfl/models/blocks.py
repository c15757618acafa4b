"""Transformer building blocks shared by the models: pure functions over plain weight dicts.

Every linear map goes through :func:`linear`, which calls the adapter hook ``hook(name, x) -> dy | None``
with the map's input; a returned ``dy`` is added to its output. Weights of a linear map named ``name`` are
``params[name] = {"w": [in, out], "b": [out]}`` (``"b"`` absent for a map without bias).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Hook = Callable[[str, jax.Array], jax.Array | None]


def linear(params: dict, name: str, x: jax.Array, hook: Hook | None) -> jax.Array:
    """``x @ w + b`` (+ the hook's ``dy``), ``x`` ``[..., in]`` → ``[..., out]``."""
    y = x @ params[name]["w"]
    if "b" in params[name]:
        y = y + params[name]["b"]
    if hook is not None and (dy := hook(name, x)) is not None:
        y = y + dy
    return y


def layer_norm(p: dict, x: jax.Array, eps: float = 1e-6) -> jax.Array:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def attention(params: dict, prefix: str, x: jax.Array, heads: int, hook: Hook | None,
              causal: bool = False) -> jax.Array:
    """Multi-head self-attention, ``x`` ``[batch, tokens, dim]`` → same shape; linear maps
    ``{prefix}_q/_k/_v/_o``."""
    b, t, d = x.shape
    q, k, v = (linear(params, f"{prefix}_{n}", x, hook).reshape(b, t, heads, d // heads) for n in "qkv")
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d // heads).astype(x.dtype)
    if causal:
        scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, jnp.finfo(scores.dtype).min)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v).reshape(b, t, d)
    return linear(params, f"{prefix}_o", out, hook)


def mlp(params: dict, prefix: str, x: jax.Array, hook: Hook | None) -> jax.Array:
    """GELU MLP with linear maps ``{prefix}_up`` and ``{prefix}_down``."""
    return linear(params, f"{prefix}_down", jax.nn.gelu(linear(params, f"{prefix}_up", x, hook)), hook)


def encoder_block(params: dict, prefix: str, x: jax.Array, heads: int, hook: Hook | None,
                  causal: bool = False) -> jax.Array:
    """Pre-LayerNorm block: ``x + attn(ln1(x))`` then ``+ mlp(ln2(x))``; norms ``{prefix}_ln1/_ln2``."""
    x = x + attention(params, prefix, layer_norm(params[f"{prefix}_ln1"], x), heads, hook, causal)
    return x + mlp(params, prefix, layer_norm(params[f"{prefix}_ln2"], x), hook)
