"""The Hugging Face Vision Transformer (``ViTForImageClassification``) as a pure function, with an adapter hook.

Matches ``transformers.models.vit`` at inference: a Conv2d patch embedding (stride = kernel = patch), a
learned [CLS] token and position embeddings (the [CLS] position included, no interpolation), pre-LayerNorm
encoder blocks with exact (erf) GELU, a final LayerNorm and a linear classifier on the [CLS] token.

Weights are a plain nested dict laid out like :mod:`jaxdfl.models.tiny_vit`: every linear map is
``params[name] = {"w": [in, out], "b": [out]}`` and goes through :func:`jaxdfl.models.blocks.linear`, so the
hook ``hook(name, x) -> dy | None`` sees its input and may add to its output. Linear maps are ``embed`` (the
patch conv as a linear map over flattened ``(channel, row, col)`` patches), ``block{i}_{q,k,v,o,up,down}`` and
``head``; LayerNorms are ``block{i}_ln1`` / ``block{i}_ln2`` / ``ln_f`` (``{"scale", "bias"}``), and the
embeddings are ``cls`` ``[hidden]`` and ``pos`` ``[patches + 1, hidden]``.

:func:`params_from_hf` reads a flat Hugging Face state dict, e.g. ``safetensors.numpy.load_file`` of a
``model.safetensors`` written by ``save_pretrained``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl.errors import ModelError
from jaxdfl.models.blocks import Hook, layer_norm, linear

# transformers.ViTConfig defaults, for keys a config.json leaves out.
_HF_DEFAULTS = {"image_size": 224, "patch_size": 16, "num_channels": 3, "hidden_size": 768, "num_hidden_layers": 12,
                "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "gelu",
                "layer_norm_eps": 1e-12, "qkv_bias": True}


def _square(cfg: dict, key: str) -> int:
    """``image_size`` / ``patch_size`` as one int; HF also allows a ``[h, w]`` pair, which must be square here."""
    value = cfg[key]
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ModelError(f"vit config {key}: only square sizes are supported, got {value!r}")
        value = value[0]
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ModelError(f"vit config {key}: expected a positive int, got {value!r}")
    return value


@dataclass(frozen=True)
class ViTSpec:
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    num_labels: int = 1000
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True

    def __post_init__(self):
        for key in ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers",
                    "num_attention_heads", "intermediate_size", "num_labels"):
            if getattr(self, key) <= 0:
                raise ModelError(f"vit: {key} must be positive, got {getattr(self, key)}")
        if self.image_size % self.patch_size:
            raise ModelError(f"vit: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.num_attention_heads:
            raise ModelError(f"vit: hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_hf_config(cls, cfg: Mapping) -> ViTSpec:
        """The spec of a Hugging Face ``config.json`` dict (``model_type`` ``"vit"``); missing keys take
        ``transformers.ViTConfig``'s defaults. Raises :class:`ModelError` for settings this model does not do."""
        cfg = _HF_DEFAULTS | dict(cfg)
        if cfg.get("model_type") != "vit":
            raise ModelError(f"vit config model_type: expected 'vit', got {cfg.get('model_type')!r}")
        if cfg["hidden_act"] != "gelu":
            raise ModelError("vit config hidden_act: only 'gelu' (exact, erf) is supported, "
                              f"got {cfg['hidden_act']!r}")
        hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        if cfg.get("head_dim") not in (None, hidden // heads if heads else None):
            raise ModelError(f"vit config head_dim: only hidden_size / num_attention_heads is supported, "
                              f"got {cfg['head_dim']!r}")
        # config.json stores the labels (id2label), not num_labels; PretrainedConfig's default is 2
        num_labels = len(cfg["id2label"]) if "id2label" in cfg else cfg.get("num_labels", 2)
        return cls(image_size=_square(cfg, "image_size"), patch_size=_square(cfg, "patch_size"),
                   num_channels=int(cfg["num_channels"]), hidden_size=int(hidden),
                   num_hidden_layers=int(cfg["num_hidden_layers"]), num_attention_heads=int(heads),
                   intermediate_size=int(cfg["intermediate_size"]), num_labels=int(num_labels),
                   layer_norm_eps=float(cfg["layer_norm_eps"]), qkv_bias=bool(cfg["qkv_bias"]))


def linear_shapes(spec: ViTSpec) -> dict[str, tuple[int, int]]:
    """Every linear map's name → ``(in, out)``. Names are ``embed``, ``block{i}_{q,k,v,o,up,down}``, ``head``."""
    d, m, p = spec.hidden_size, spec.intermediate_size, spec.patch_size
    shapes = {"embed": (spec.num_channels * p * p, d)}
    for i in range(spec.num_hidden_layers):
        shapes |= {f"block{i}_q": (d, d), f"block{i}_k": (d, d), f"block{i}_v": (d, d), f"block{i}_o": (d, d),
                   f"block{i}_up": (d, m), f"block{i}_down": (m, d)}
    shapes["head"] = (d, spec.num_labels)
    return shapes


def layer_kind(name: str) -> str:
    """``block3_q`` → ``q``; ``head`` → ``head``; ``embed`` → ``embed``."""
    return name.split("_", 1)[1] if name.startswith("block") else name


# Our per-block name → the HF tensor name prefixes it may have, first the checkpoint (save_pretrained) layout,
# then the module layout of transformers >= 5 (``model.state_dict()``).
_BLOCK_LINEARS = {
    "q": ("vit.encoder.layer.{i}.attention.attention.query", "vit.layers.{i}.attention.q_proj"),
    "k": ("vit.encoder.layer.{i}.attention.attention.key", "vit.layers.{i}.attention.k_proj"),
    "v": ("vit.encoder.layer.{i}.attention.attention.value", "vit.layers.{i}.attention.v_proj"),
    "o": ("vit.encoder.layer.{i}.attention.output.dense", "vit.layers.{i}.attention.o_proj"),
    "up": ("vit.encoder.layer.{i}.intermediate.dense", "vit.layers.{i}.mlp.fc1"),
    "down": ("vit.encoder.layer.{i}.output.dense", "vit.layers.{i}.mlp.fc2"),
}
_BLOCK_NORMS = {
    "ln1": ("vit.encoder.layer.{i}.layernorm_before", "vit.layers.{i}.layernorm_before"),
    "ln2": ("vit.encoder.layer.{i}.layernorm_after", "vit.layers.{i}.layernorm_after"),
}


def hf_linear(kind: str, block: int) -> str:
    """The module path of our linear map ``block{block}_{kind}`` in transformers' ``ViTForImageClassification``."""
    return _BLOCK_LINEARS[kind][0].format(i=block)


def params_from_hf(tensors: Mapping[str, np.ndarray], spec: ViTSpec) -> dict:
    """Our weights from a flat HF ``ViTForImageClassification`` state dict (torch ``[out, in]`` linears are
    transposed to ``[in, out]``; the patch conv ``[hidden, C, p, p]`` becomes ``[C·p·p, hidden]``). Raises
    :class:`ModelError` naming any missing tensor or one whose shape does not fit ``spec``; extra tensors (a
    pooler, say) are ignored."""

    def get(*names: str, shape: tuple[int, ...]) -> jax.Array:
        for n in names:
            if n in tensors:
                value = np.asarray(tensors[n])
                if value.shape != shape:
                    raise ModelError(f"vit weights: {n} has shape {value.shape}, expected {shape} for this config")
                return jnp.asarray(value)
        raise ModelError(f"vit weights: missing tensor {names[0]}")

    d, m, p, c = spec.hidden_size, spec.intermediate_size, spec.patch_size, spec.num_channels
    sizes = {"q": (d, d), "k": (d, d), "v": (d, d), "o": (d, d), "up": (m, d), "down": (d, m)}  # torch [out, in]
    conv = "vit.embeddings.patch_embeddings.projection"
    params = {
        "embed": {"w": get(f"{conv}.weight", shape=(d, c, p, p)).reshape(d, c * p * p).T,
                  "b": get(f"{conv}.bias", shape=(d,))},
        "cls": get("vit.embeddings.cls_token", shape=(1, 1, d)).reshape(d),
        "pos": get("vit.embeddings.position_embeddings", shape=(1, spec.num_patches + 1, d))[0],
    }
    for i in range(spec.num_hidden_layers):
        for ours, hf in _BLOCK_LINEARS.items():
            names = [h.format(i=i) for h in hf]
            entry = {"w": get(*(f"{n}.weight" for n in names), shape=sizes[ours]).T}
            if ours not in ("q", "k", "v") or spec.qkv_bias:
                entry["b"] = get(*(f"{n}.bias" for n in names), shape=(sizes[ours][0],))
            params[f"block{i}_{ours}"] = entry
        for ours, hf in _BLOCK_NORMS.items():
            names = [h.format(i=i) for h in hf]
            params[f"block{i}_{ours}"] = {"scale": get(*(f"{n}.weight" for n in names), shape=(d,)),
                                          "bias": get(*(f"{n}.bias" for n in names), shape=(d,))}
    params["ln_f"] = {"scale": get("vit.layernorm.weight", shape=(d,)), "bias": get("vit.layernorm.bias", shape=(d,))}
    params["head"] = {"w": get("classifier.weight", shape=(spec.num_labels, d)).T,
                      "b": get("classifier.bias", shape=(spec.num_labels,))}
    return params


def patchify(pixels: jax.Array, spec: ViTSpec) -> jax.Array:
    """``[batch, C, H, W]`` → ``[batch, patches, C·p·p]``: patches in row-major order over the patch grid (as
    the conv output's ``flatten(2)``), each flattened as ``(channel, row, col)`` (as the conv weight's
    ``[hidden, C, p, p]``)."""
    b, c, h, w = pixels.shape
    p = spec.patch_size
    x = pixels.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // p) * (w // p), c * p * p)


def _attention(params: dict, prefix: str, x: jax.Array, spec: ViTSpec, hook: Hook | None) -> jax.Array:
    b, t, d = x.shape
    q, k, v = (linear(params, f"{prefix}_{n}", x, hook).reshape(b, t, spec.num_attention_heads, spec.head_dim)
               for n in "qkv")
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (spec.head_dim ** -0.5)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)  # float32 softmax, as HF
    return linear(params, f"{prefix}_o", jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, d), hook)


def _block(params: dict, prefix: str, x: jax.Array, spec: ViTSpec, hook: Hook | None) -> jax.Array:
    eps = spec.layer_norm_eps
    x = x + _attention(params, prefix, layer_norm(params[f"{prefix}_ln1"], x, eps), spec, hook)
    h = linear(params, f"{prefix}_up", layer_norm(params[f"{prefix}_ln2"], x, eps), hook)
    return x + linear(params, f"{prefix}_down", jax.nn.gelu(h, approximate=False), hook)


def apply(params: dict, pixels: jax.Array, spec: ViTSpec, hook: Hook | None = None) -> jax.Array:
    """Logits ``[batch, num_labels]`` for pixels ``[batch, channels, H, W]`` (NCHW, as HF's ``pixel_values``).

    Raises :class:`ModelError` if the pixels are not ``[batch, num_channels, image_size, image_size]``."""
    expected = (spec.num_channels, spec.image_size, spec.image_size)
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
        raise ModelError(f"vit input: expected pixels [batch, {', '.join(map(str, expected))}] (NCHW), "
                          f"got shape {tuple(pixels.shape)}")
    x = linear(params, "embed", patchify(pixels, spec), hook)
    cls = jnp.broadcast_to(params["cls"], (x.shape[0], 1, spec.hidden_size))
    x = jnp.concatenate([cls, x], axis=1) + params["pos"]
    for i in range(spec.num_hidden_layers):
        x = _block(params, f"block{i}", x, spec, hook)
    return linear(params, "head", layer_norm(params["ln_f"], x[:, 0], spec.layer_norm_eps), hook)


def prepare_pixels(images: jax.Array, spec: ViTSpec) -> jax.Array:
    """uint8 images ``[batch, C, h, w]`` → the model's input: scaled to [-1, 1] (mean 0.5, std 0.5 per channel, as
    the ViT image processor does) and resized bilinearly to ``spec.image_size``. Float input passes as is."""
    if images.dtype != jnp.uint8:
        return images
    x = images.astype(jnp.float32) / 127.5 - 1.0
    if x.shape[-1] != spec.image_size:
        x = jax.image.resize(x, (*x.shape[:2], spec.image_size, spec.image_size), "bilinear")
    return x
