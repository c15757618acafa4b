"""A tiny Vision Transformer as a pure function, with an adapter hook on every linear map.

Pre-LayerNorm encoder over non-overlapping patches plus a class token; the classifier reads the class
token. Weights are a plain nested dict of arrays; every linear map stores ``w`` as ``[in, out]``
(``y = x @ w + b``), so in the papers' notation W0 ∈ R^{d×k} is ``w.T``.

The hook is how adapters (and activation capture) attach without a second model:
``hook(name, x) -> dy | None`` is called with the input ``x`` ``[..., in]`` of the linear map ``name``;
a returned ``dy`` ``[..., out]`` is added to its output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp

from jaxdfl.models.blocks import Hook, encoder_block, layer_norm, linear

@dataclass(frozen=True)
class TinyViTSpec:
    image_size: int = 8
    channels: int = 1
    patch: int = 2
    dim: int = 64
    depth: int = 3
    heads: int = 4
    mlp_dim: int = 128
    num_classes: int = 10

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch) ** 2

    def to_dict(self) -> dict:
        return asdict(self)


def linear_shapes(spec: TinyViTSpec) -> dict[str, tuple[int, int]]:
    """Every linear map's name → ``(in, out)``. Names are ``embed``, ``block{i}_{q,k,v,o,up,down}``, ``head``."""
    d, m = spec.dim, spec.mlp_dim
    shapes = {"embed": (spec.patch * spec.patch * spec.channels, d)}
    for i in range(spec.depth):
        shapes |= {f"block{i}_q": (d, d), f"block{i}_k": (d, d), f"block{i}_v": (d, d), f"block{i}_o": (d, d),
                   f"block{i}_up": (d, m), f"block{i}_down": (m, d)}
    shapes["head"] = (d, spec.num_classes)
    return shapes


def layer_kind(name: str) -> str:
    """``block2_up`` → ``up``; ``head`` → ``head``."""
    return name.split("_", 1)[1] if name.startswith("block") else name


def init_params(key: jax.Array, spec: TinyViTSpec) -> dict:
    """Random initial weights (truncated-normal linears, zero biases, unit LayerNorms)."""
    shapes = linear_shapes(spec)
    keys = jax.random.split(key, len(shapes) + 2)
    init = jax.nn.initializers.truncated_normal(stddev=0.02)
    params = {name: {"w": init(k, shape), "b": jnp.zeros(shape[1])} for k, (name, shape) in zip(keys, shapes.items())}
    for i in range(spec.depth):
        for ln in ("ln1", "ln2"):
            params[f"block{i}_{ln}"] = {"scale": jnp.ones(spec.dim), "bias": jnp.zeros(spec.dim)}
    params["ln_f"] = {"scale": jnp.ones(spec.dim), "bias": jnp.zeros(spec.dim)}
    params["cls"] = init(keys[-2], (spec.dim,))
    params["pos"] = init(keys[-1], (spec.num_patches + 1, spec.dim))
    return params


def patchify(images: jax.Array, spec: TinyViTSpec) -> jax.Array:
    """``[batch, H, W]`` or ``[batch, H, W, C]`` → ``[batch, patches, patch·patch·C]``."""
    if images.ndim == 3:
        images = images[..., None]
    b, h, w, c = images.shape
    p = spec.patch
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def apply(params: dict, images: jax.Array, spec: TinyViTSpec, hook: Hook | None = None) -> jax.Array:
    """Logits ``[batch, num_classes]`` for images ``[batch, H, W]`` (or ``[batch, H, W, C]``)."""
    x = linear(params, "embed", patchify(images, spec), hook)
    cls = jnp.broadcast_to(params["cls"], (x.shape[0], 1, spec.dim))
    x = jnp.concatenate([cls, x], axis=1) + params["pos"]
    for i in range(spec.depth):
        x = encoder_block(params, f"block{i}", x, spec.heads, hook)
    return linear(params, "head", layer_norm(params["ln_f"], x[:, 0]), hook)
