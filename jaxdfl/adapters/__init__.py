"""Adapter methods, one file each: a :class:`~jaxdfl.core.Method` factory and its config class.

:data:`METHODS` is the registry ``method.name`` is looked up in. Adding a method is one file (a factory and a
:class:`~jaxdfl.adapters.base.MethodConfig` subclass with a ``make``) plus one line here (``docs/methods.md``
walks through an example).

A(n) is equation n of Paper A (sparse-and-orthogonal LoRA for decentralized multi-task fine-tuning), B(n) of
Paper B (SOFT and TSFA for wireless federated LoRA).
"""

from __future__ import annotations

import typing

from jaxdfl.adapters.base import MethodConfig
from jaxdfl.adapters.full import FullConfig, full
from jaxdfl.adapters.hetero import HeteroLoraConfig, hetero_lora
from jaxdfl.adapters.lora import LoraConfig, lora
from jaxdfl.adapters.lora_fa import LoraFaConfig, lora_fa
from jaxdfl.adapters.so_lora import LoriConfig, SoLoraConfig, so_lora
from jaxdfl.adapters.soft import SparseLoraConfig, sparse_lora
from jaxdfl.core import AdapterState, ExpertMixture, ExpertView, Message, Method, Mixed, RoundControl, num_params


def _by_name(*configs: type[MethodConfig]) -> dict[str, type[MethodConfig]]:
    """``{name: config class}`` from each class's ``name: Literal[...]``."""
    return {name: cls for cls in configs for name in typing.get_args(typing.get_type_hints(cls)["name"])}


METHODS: dict[str, type[MethodConfig]] = _by_name(
    LoraConfig,
    LoraFaConfig,
    FullConfig,
    SparseLoraConfig,  # soft, tlora, rlora, slora, ilora
    SoLoraConfig,
    LoriConfig,
    HeteroLoraConfig,  # hetlora, flora
)


def make_method(method_cfg: MethodConfig, batch_size: int = 32) -> Method:
    """The :class:`Method` a ``method`` config section describes (``batch_size`` sets the compute budget of
    ``so_lora``/``lori`` under ``budget: compute``)."""
    return method_cfg.make(batch_size)


__all__ = ["AdapterState", "ExpertMixture", "ExpertView", "FullConfig", "HeteroLoraConfig", "LoraConfig",
           "LoraFaConfig", "LoriConfig", "METHODS", "Message", "Method", "MethodConfig", "Mixed", "RoundControl",
           "SoLoraConfig", "SparseLoraConfig", "full", "hetero_lora", "lora", "lora_fa", "make_method", "num_params",
           "so_lora", "sparse_lora"]
