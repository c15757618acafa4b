"""Adapter methods: one file each, all fulfilling :class:`jaxdfl.adapters.base.Method`."""

from __future__ import annotations

from jaxdfl.adapters.base import AdapterState, ExpertView, Message, Method, Mixed, num_params
from jaxdfl.adapters.full import full
from jaxdfl.adapters.lora import lora
from jaxdfl.adapters.so_lora import so_lora
from jaxdfl.adapters.soft import sparse_lora

# Methods that send sparsified deltas (Paper B): the name is the sparsifier.
DELTA_METHODS = ("soft", "tlora", "rlora", "slora", "ilora")


# Paper A's defaults for keys left null: the proposed method, and LoRI (uniform density, no refinement, every
# held expert summed).
SO_LORA_DEFAULTS = {"so_lora": {"density": 0.5, "allocation": "entropy", "refine": "column", "top_k": None},
                    "lori": {"density": 0.1, "allocation": "uniform", "refine": "none", "top_k": 0}}


def make_method(method_cfg, batch_size: int = 32) -> Method:
    """The Method named by ``method.name``, built from its config section (``batch_size`` sets the compute
    budget of ``so_lora``/``lori`` under ``method.budget: compute``)."""
    if method_cfg.name in SO_LORA_DEFAULTS:
        c, default = method_cfg, SO_LORA_DEFAULTS[method_cfg.name]
        pick = lambda key, value: default[key] if value is None else value  # noqa: E731
        return so_lora(c.rank, c.alpha, c.a_std, density=pick("density", c.density),
                       allocation=pick("allocation", c.allocation), temperature=c.temperature,
                       refine=pick("refine", c.refine), top_k=pick("top_k", c.moe_top_k),
                       calib_rounds=c.calib_rounds, aggregation=c.aggregation, budget=c.budget,
                       compute_max=c.compute_max, compute_per_param=c.compute_per_param, batch_size=batch_size,
                       train_with_experts=c.train_with_experts)
    if method_cfg.name == "lora":
        return lora(method_cfg.rank, method_cfg.alpha, method_cfg.a_std)
    if method_cfg.name == "full":
        return full()
    if method_cfg.name in DELTA_METHODS:
        return sparse_lora(method_cfg.name, method_cfg.rank, method_cfg.alpha, method_cfg.a_std, method_cfg.ratio,
                           method_cfg.error_feedback, method_cfg.zeta)
    raise ValueError(f"unknown method {method_cfg.name!r}")  # unreachable: the config's Literal checks names


__all__ = ["DELTA_METHODS", "AdapterState", "ExpertView", "Message", "Method", "Mixed", "full", "lora", "make_method",
           "num_params", "so_lora", "sparse_lora"]
