"""LoRA-FA (Zhang et al., 2023, "LoRA-FA: Memory-efficient Low-rank Adaptation for Large Language Models
Fine-tuning"): A is frozen at its random init and shared by every device; only B trains, is sent and is
averaged. Half of LoRA's uplink at equal rank, and averaging B alone is exact: every device's B multiplies the
same A."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxdfl.adapters.base import AdapterState, LowRankConfig, Method, send_dense, take_mixed
from jaxdfl.adapters.lora import init_factors, lora_delta


def lora_fa(rank: int = 4, alpha: float = 8.0, a_std: float | None = None) -> Method:
    scale = alpha / rank

    def init(key, layers, stats=None):
        factors = init_factors(key, layers, rank, a_std)
        return AdapterState({n: {"b": f["b"]} for n, f in factors.items()},  # trained and sent
                            frozen={n: f["a"] for n, f in factors.items()})  # fixed forever

    def delta(state, name, x):
        if name not in state.params:
            return None
        return lora_delta(state.frozen[name], state.params[name]["b"], x, scale)

    return Method(init, delta, send_dense, take_mixed)


@dataclass(frozen=True)
class LoraFaConfig(LowRankConfig):
    """``lora_fa``: A frozen and shared (keep ``shared_init``), only B trained and sent."""

    name: Literal["lora_fa"] = "lora_fa"

    def make(self, batch_size: int) -> Method:
        return lora_fa(self.rank, self.alpha, self.a_std)
