"""Adapter methods: one file each, all fulfilling :class:`jaxdfl.adapters.base.Method`."""

from __future__ import annotations

from jaxdfl.adapters.base import AdapterState, Message, Method, Mixed, num_params
from jaxdfl.adapters.full import full
from jaxdfl.adapters.lora import lora
from jaxdfl.adapters.soft import sparse_lora

# Methods that send sparsified deltas (Paper B): the name is the sparsifier.
DELTA_METHODS = ("soft", "tlora", "rlora", "slora", "ilora")


def make_method(method_cfg) -> Method:
    """The Method named by ``method.name``, built from its config section."""
    if method_cfg.name == "lora":
        return lora(method_cfg.rank, method_cfg.alpha, method_cfg.a_std)
    if method_cfg.name == "full":
        return full()
    if method_cfg.name in DELTA_METHODS:
        return sparse_lora(method_cfg.name, method_cfg.rank, method_cfg.alpha, method_cfg.a_std, method_cfg.ratio,
                           method_cfg.error_feedback, method_cfg.zeta)
    raise ValueError(f"unknown method {method_cfg.name!r}")  # unreachable: the config's Literal checks names


__all__ = ["DELTA_METHODS", "AdapterState", "Message", "Method", "Mixed", "full", "lora", "make_method", "num_params",
           "sparse_lora"]
