"""Loading base models and their weights: known names, Hugging Face directories, GGUF files, and the
safetensors files jaxdfl writes (the bundled tiny ViT)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from safetensors.numpy import load_file, save_file

from jaxdfl.errors import ModelError
from jaxdfl.models import checkpoints, decoder, registry, vit
from jaxdfl.models.decoder import DecoderSpec
from jaxdfl.models.model import Model, decoder_model, tiny_vit_model, vit_model
from jaxdfl.models.tiny_vit import TinyViTSpec
from jaxdfl.models.vit import ViTSpec

BUNDLED_TINY_VIT = {"bundled": "tiny_vit_digits.safetensors",  # width 64 (the default backbone)
                    "bundled_wide": "tiny_vit_wide_digits.safetensors"}  # width 128 (Paper A's fair test)


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
            raise ModelError(f"no model at {path}: expected a Hugging Face directory, a .gguf file, or a known "
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
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{path}: not a readable .safetensors file ({err})") from None
    if meta.get("model") != "tiny_vit":
        raise ModelError(f"{path}: not a jaxdfl tiny_vit checkpoint (metadata model={meta.get('model')!r})")
    spec = TinyViTSpec(**json.loads(meta["spec"]))
    params = jax.tree.map(jax.numpy.asarray, _unflatten(load_file(str(path))))
    return tiny_vit_model(spec), params


def bundled_weights_path(name: str = "bundled") -> Path:
    """The file of a bundled tiny ViT: ``bundled`` (width 64) or ``bundled_wide`` (width 128), both pretrained on
    upright digits by ``experiments/pretrain_tiny_vit.py``."""
    return Path(str(resources.files("jaxdfl.models") / "weights" / BUNDLED_TINY_VIT[name]))
