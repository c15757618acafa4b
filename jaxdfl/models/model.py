"""A base model as the engine sees it: a pure ``apply`` with adapter hooks, and its adaptable linear maps."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable, NamedTuple

import jax

from jaxdfl.models import decoder, tiny_vit, vit
from jaxdfl.models.decoder import DecoderSpec
from jaxdfl.models.tiny_vit import TinyViTSpec
from jaxdfl.models.vit import ViTSpec


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


def adapted_layers(model: Model, kinds) -> dict[str, tuple[int, int]]:
    """The linear maps whose kind is in ``kinds`` → ``(in, out)``."""
    return {n: s for n, s in model.linear_shapes.items() if model.layer_kind(n) in kinds}
