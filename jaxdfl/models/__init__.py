"""Frozen base models as pure apply functions with adapter hooks (:mod:`~jaxdfl.models.model`), and loading
their weights (:mod:`~jaxdfl.models.loading`)."""

from jaxdfl.models import decoder, registry, tiny_vit, vit
from jaxdfl.models.blocks import Hook
from jaxdfl.models.decoder import DecoderSpec
from jaxdfl.models.loading import bundled_weights_path, from_pretrained, load_weights, save_weights
from jaxdfl.models.model import Model, adapted_layers, decoder_model, tiny_vit_model, vit_model
from jaxdfl.models.tiny_vit import TinyViTSpec
from jaxdfl.models.vit import ViTSpec

__all__ = ["DecoderSpec", "Hook", "Model", "TinyViTSpec", "ViTSpec", "adapted_layers", "bundled_weights_path",
           "decoder", "decoder_model", "from_pretrained", "load_weights", "registry", "save_weights",
           "tiny_vit", "tiny_vit_model", "vit", "vit_model"]
