"""Full fine-tuning of the adapted weights (Paper A's FPFT baseline): every adapted linear map gets a dense
trainable increment ``dW`` ``[in, out]`` (zero at init), sent whole and averaged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax.numpy as jnp

from jaxdfl.adapters.base import AdapterState, Method, MethodConfig, send_dense, take_mixed


def full() -> Method:
    def init(key, layers, stats=None):
        return AdapterState({name: jnp.zeros(shape) for name, shape in layers.items()})

    def delta(state, name, x):
        dw = state.params.get(name)
        return None if dw is None else x @ dw

    return Method(init, delta, send_dense, take_mixed)


@dataclass(frozen=True)
class FullConfig(MethodConfig):
    """``full``: dense increments of the adapted weights, trained, sent and averaged whole."""

    name: Literal["full"] = "full"

    def make(self, batch_size: int) -> Method:
        return full()
