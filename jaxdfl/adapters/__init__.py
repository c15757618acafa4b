"""Adapter methods: one file each, all fulfilling :class:`jaxdfl.adapters.base.Method`."""

from __future__ import annotations

from jaxdfl.adapters.base import AdapterState, Message, Method, Mixed, num_params
from jaxdfl.adapters.full import full
from jaxdfl.adapters.lora import lora


def make_method(method_cfg) -> Method:
    """The Method named by ``method.name``, built from its config section."""
    if method_cfg.name == "lora":
        return lora(method_cfg.rank, method_cfg.alpha, method_cfg.a_std)
    if method_cfg.name == "full":
        return full()
    raise ValueError(f"unknown method {method_cfg.name!r}")  # unreachable: the config's Literal checks names


__all__ = ["AdapterState", "Message", "Method", "Mixed", "full", "lora", "make_method", "num_params"]
