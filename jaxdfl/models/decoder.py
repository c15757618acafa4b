"""A decoder-only transformer covering the Llama and Qwen2 families, as pure functions with adapter hooks.

Pre-RMSNorm blocks with rotary position embeddings (RoPE, the half-split form of Hugging Face's
``rotate_half``), grouped-query attention (``num_kv_heads`` key/value heads shared by groups of query heads),
a SwiGLU MLP ``down(silu(gate(x)) * up(x))``, optional q/k/v biases (Qwen2) and tied or untied embeddings.

Weights are a plain nested dict; every linear map stores ``w`` as ``[in, out]`` and goes through
:func:`jaxdfl.models.blocks.linear`, so adapters attach through the same hook as the tiny models. Linear
map names: ``block{i}_{q,k,v,o,gate,up,down}`` and ``head``. The embedding table is ``params["embed"]["table"]``
``[vocab, hidden]``; with tied embeddings there is no ``params["head"]`` and the head reads the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp

from jaxdfl.errors import ModelError
from jaxdfl.models.blocks import Hook, linear

SUPPORTED = ("llama", "qwen2")


@dataclass(frozen=True)
class DecoderSpec:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    qkv_bias: bool = False
    tie_embeddings: bool = False
    family: str = "llama"

    @classmethod
    def from_hf_config(cls, cfg: dict) -> "DecoderSpec":
        """From a Hugging Face ``config.json`` of a ``llama`` or ``qwen2`` model."""
        family = cfg.get("model_type")
        if family not in SUPPORTED:
            raise ModelError(f"model_type {family!r} is not a supported decoder; supported: {list(SUPPORTED)}")
        rope_params = cfg.get("rope_parameters") or {}  # transformers >= 5 folds theta and scaling in here
        scaling = cfg.get("rope_scaling") or rope_params
        if scaling.get("rope_type", scaling.get("type", "default")) not in ("default", None):
            raise ModelError(f"rope_scaling {scaling} is not supported (only plain RoPE)")
        if cfg.get("hidden_act", "silu") != "silu":
            raise ModelError(f"hidden_act {cfg['hidden_act']!r} is not supported (only silu, SwiGLU)")
        heads = cfg["num_attention_heads"]
        theta = cfg.get("rope_theta") or rope_params.get("rope_theta") or 10000.0
        return cls(
            vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], num_layers=cfg["num_hidden_layers"],
            num_heads=heads, num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate_size=cfg["intermediate_size"], rms_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta), qkv_bias=family == "qwen2" or bool(cfg.get("attention_bias", False)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), family=family)

    def to_dict(self) -> dict:
        return asdict(self)


def linear_shapes(spec: DecoderSpec) -> dict[str, tuple[int, int]]:
    """Every linear map's name → ``(in, out)``."""
    d, f, hd = spec.hidden_size, spec.intermediate_size, spec.head_dim
    shapes = {}
    for i in range(spec.num_layers):
        shapes |= {f"block{i}_q": (d, spec.num_heads * hd), f"block{i}_k": (d, spec.num_kv_heads * hd),
                   f"block{i}_v": (d, spec.num_kv_heads * hd), f"block{i}_o": (spec.num_heads * hd, d),
                   f"block{i}_gate": (d, f), f"block{i}_up": (d, f), f"block{i}_down": (f, d)}
    shapes["head"] = (d, spec.vocab_size)
    return shapes


def layer_kind(name: str) -> str:
    """``block2_gate`` → ``gate``; ``head`` → ``head``."""
    return name.split("_", 1)[1] if name.startswith("block") else name


def init_params(key: jax.Array, spec: DecoderSpec) -> dict:
    """Random weights (normal, std 0.02; zero biases; unit norms), for tests and random baselines."""
    shapes = linear_shapes(spec)
    if spec.tie_embeddings:
        del shapes["head"]
    keys = jax.random.split(key, len(shapes) + 1)
    params = {name: {"w": 0.02 * jax.random.normal(k, shape)} for k, (name, shape) in zip(keys, shapes.items())}
    if spec.qkv_bias:
        for i in range(spec.num_layers):
            for n in "qkv":
                params[f"block{i}_{n}"]["b"] = jnp.zeros(shapes[f"block{i}_{n}"][1])
    for i in range(spec.num_layers):
        params[f"block{i}_ln1"] = {"scale": jnp.ones(spec.hidden_size)}
        params[f"block{i}_ln2"] = {"scale": jnp.ones(spec.hidden_size)}
    params["ln_f"] = {"scale": jnp.ones(spec.hidden_size)}
    params["embed"] = {"table": 0.02 * jax.random.normal(keys[-1], (spec.vocab_size, spec.hidden_size))}
    return params


def rms_norm(p: dict, x: jax.Array, eps: float) -> jax.Array:
    """``x / rms(x) * scale``, computed in float32."""
    x32 = x.astype(jnp.float32)
    return (x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, -1, keepdims=True) + eps)).astype(x.dtype) * p["scale"]


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding of ``x`` ``[batch, seq, heads, head_dim]`` at ``positions`` ``[batch, seq]`` (half-split
    pairs: dimension j rotates with j + head_dim/2, at frequency theta^(-2j/head_dim))."""
    half = x.shape[-1] // 2
    inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [batch, seq, half]
    cos, sin = jnp.cos(angles)[:, :, None, :], jnp.sin(angles)[:, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def attention(params: dict, prefix: str, x: jax.Array, spec: DecoderSpec, hook: Hook | None,
              positions: jax.Array, allowed: jax.Array, cache: tuple | None = None) -> tuple[jax.Array, tuple | None]:
    """Grouped-query attention, ``x`` ``[batch, seq, hidden]`` → same shape; query t sees key s where
    ``allowed`` ``[batch, seq, keys]`` is true.

    Without a cache the keys are ``x``'s own. With ``cache = (k, v)`` ``[batch, width, kv_heads, head_dim]``,
    this call's keys and values are first written at buffer index = position, and the queries attend over
    the whole buffer; the updated cache is returned (None without one)."""
    b, t, _ = x.shape
    hd, kv = spec.head_dim, spec.num_kv_heads
    groups = spec.num_heads // kv
    q = rope(linear(params, f"{prefix}_q", x, hook).reshape(b, t, spec.num_heads, hd), positions, spec.rope_theta)
    k = rope(linear(params, f"{prefix}_k", x, hook).reshape(b, t, kv, hd), positions, spec.rope_theta)
    v = linear(params, f"{prefix}_v", x, hook).reshape(b, t, kv, hd)
    if cache is not None:
        rows = jnp.arange(b)[:, None]
        k, v = cache[0].at[rows, positions].set(k), cache[1].at[rows, positions].set(v)
        cache = (k, v)
    q = q.reshape(b, t, kv, groups, hd)
    scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k).astype(jnp.float32) / jnp.sqrt(jnp.float32(hd))
    scores = jnp.where(allowed[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    out = jnp.einsum("bkgqs,bskd->bqkgd", probs, v).reshape(b, t, spec.num_heads * hd)
    return linear(params, f"{prefix}_o", out, hook), cache


def mlp(params: dict, prefix: str, x: jax.Array, hook: Hook | None) -> jax.Array:
    gate = jax.nn.silu(linear(params, f"{prefix}_gate", x, hook))
    return linear(params, f"{prefix}_down", gate * linear(params, f"{prefix}_up", x, hook), hook)


def _blocks(params: dict, tokens: jax.Array, spec: DecoderSpec, hook: Hook | None, positions: jax.Array,
            allowed: jax.Array, caches: list | None) -> tuple[jax.Array, list | None]:
    x = params["embed"]["table"][tokens]
    new_caches = [] if caches is not None else None
    for i in range(spec.num_layers):
        h, cache = attention(params, f"block{i}", rms_norm(params[f"block{i}_ln1"], x, spec.rms_eps), spec, hook,
                             positions, allowed, None if caches is None else caches[i])
        x = x + h
        x = x + mlp(params, f"block{i}", rms_norm(params[f"block{i}_ln2"], x, spec.rms_eps), hook)
        if caches is not None:
            new_caches.append(cache)
    return rms_norm(params["ln_f"], x, spec.rms_eps), new_caches


def hidden_states(params: dict, tokens: jax.Array, spec: DecoderSpec, hook: Hook | None = None,
                  positions: jax.Array | None = None, segments: jax.Array | None = None) -> jax.Array:
    """The final-normed hidden states ``[batch, seq, hidden]`` for ``tokens`` ``[batch, seq]`` (int).

    Causal: position t sees positions ≤ t only, so right padding never changes the states of real tokens.
    ``positions`` ``[batch, seq]`` (default 0, 1, ...) are the RoPE positions. With ``segments``
    ``[batch, seq]``, a token of segment g > 0 sees only segment 0 and its own segment: several continuations
    of one prompt packed in one sequence (:mod:`jaxdfl.data.text_encoding`)."""
    b, t = tokens.shape
    allowed = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
    if segments is not None:
        allowed = allowed & ((segments[:, None, :] == 0) | (segments[:, None, :] == segments[:, :, None]))
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t), (b, t))
    return _blocks(params, tokens, spec, hook, positions, allowed, None)[0]


def empty_cache(spec: DecoderSpec, batch: int, width: int, dtype=jnp.float32) -> list:
    """A key/value buffer per layer, ``[batch, width, kv_heads, head_dim]`` each, for :func:`hidden_states_cached`."""
    shape = (batch, width, spec.num_kv_heads, spec.head_dim)
    return [(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)) for _ in range(spec.num_layers)]


def hidden_states_cached(params: dict, tokens: jax.Array, positions: jax.Array, cache: list, spec: DecoderSpec,
                         hook: Hook | None = None) -> tuple[jax.Array, list]:
    """Incremental decoding: the hidden states of ``tokens`` ``[batch, t]`` at buffer positions ``positions``
    ``[batch, t]`` (also their RoPE positions), attending to every cached position ≤ their own, and the cache
    with their keys and values written in. Positions ≤ a query's must already hold that row's real tokens."""
    width = cache[0][0].shape[1]
    allowed = jnp.arange(width)[None, None, :] <= positions[:, :, None]
    return _blocks(params, tokens, spec, hook, positions, allowed, cache)


def logits_from_hidden(params: dict, h: jax.Array, spec: DecoderSpec, hook: Hook | None = None) -> jax.Array:
    """The head ``[..., hidden]`` → ``[..., vocab]`` (the embedding table when tied)."""
    if spec.tie_embeddings:
        y = h @ params["embed"]["table"].T
        if hook is not None and (dy := hook("head", h)) is not None:
            y = y + dy
        return y
    return linear(params, "head", h, hook)


def apply(params: dict, tokens: jax.Array, spec: DecoderSpec, hook: Hook | None = None) -> jax.Array:
    """Next-token logits ``[batch, seq, vocab]`` for ``tokens`` ``[batch, seq]``."""
    return logits_from_hidden(params, hidden_states(params, tokens, spec, hook), spec, hook)


def _torch_linear(tensors: dict, name: str, bias: bool = False) -> dict:
    out = {"w": tensors[f"{name}.weight"].T}
    if bias:
        out["b"] = tensors[f"{name}.bias"]
    return out


def params_from_hf(tensors: dict, spec: DecoderSpec) -> dict:
    """Our layout from a flat Hugging Face state dict (``model.layers.{i}.self_attn.q_proj.weight``...),
    torch ``[out, in]`` matrices transposed to ``[in, out]``. Names a missing tensor in a ModelError."""
    try:
        params = {"embed": {"table": tensors["model.embed_tokens.weight"]},
                  "ln_f": {"scale": tensors["model.norm.weight"]}}
        for i in range(spec.num_layers):
            src = f"model.layers.{i}"
            for n in "qkv":
                params[f"block{i}_{n}"] = _torch_linear(tensors, f"{src}.self_attn.{n}_proj", spec.qkv_bias)
            params[f"block{i}_o"] = _torch_linear(tensors, f"{src}.self_attn.o_proj")
            for n in ("gate", "up", "down"):
                params[f"block{i}_{n}"] = _torch_linear(tensors, f"{src}.mlp.{n}_proj")
            params[f"block{i}_ln1"] = {"scale": tensors[f"{src}.input_layernorm.weight"]}
            params[f"block{i}_ln2"] = {"scale": tensors[f"{src}.post_attention_layernorm.weight"]}
        if not spec.tie_embeddings:
            params["head"] = _torch_linear(tensors, "lm_head")
    except KeyError as err:
        raise ModelError(f"checkpoint lacks tensor {err.args[0]!r} for a {spec.family} decoder") from None
    return params
