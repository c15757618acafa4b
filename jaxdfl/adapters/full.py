"""Full fine-tuning of the adapted weights (Paper A's FPFT baseline): every adapted linear map gets a dense
trainable increment ``dW`` ``[in, out]`` (zero at init), sent whole and averaged."""

from __future__ import annotations

import jax.numpy as jnp

from jaxdfl.adapters.base import AdapterState, Method, no_regularizer, send_dense, take_mixed


def full() -> Method:
    def init(key, layers):
        return AdapterState({name: jnp.zeros(shape) for name, shape in layers.items()}, {}, {})

    def delta(state, name, x):
        dw = state.params.get(name)
        return None if dw is None else x @ dw

    return Method(init, delta, no_regularizer, send_dense, take_mixed)
