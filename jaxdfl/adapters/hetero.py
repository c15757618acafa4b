"""LoRA with a different rank on every device (weak phones train small adapters), in one program: every
device holds factors of the largest rank r_max, and a mask ``[r_max]`` keeps its own first r_i.

Two ways to aggregate adapters of unequal rank:

* ``hetlora`` — zero-padding (HetLoRA, Cho et al. 2024, "Heterogeneous LoRA for Federated Fine-tuning of
  On-Device Foundation Models"): every device sends its factors zero-padded to r_max, the mixing matrix
  averages them as they are (a rank a device lacks counts as zeros), and each device keeps the first r_i
  ranks of the result (truncation).
* ``flora`` — stacking (FLoRA, Wang et al. 2024, "FLoRA: Federated Fine-Tuning Large Language Models with
  Heterogeneous Low-Rank Adaptations"): stacking every device's A and B along the rank axis makes the
  global update ``Σ_j W_ij B_j A_j`` exactly, with no cross terms. A device folds it into its own copy of the
  merged weights (``memory``, ``[out, in]`` per layer) and restarts its LoRA from B = 0 on top, keeping A.
  What goes on the air is the factors (r_j·(in + out) entries); the simulation mixes their products, which
  is the same sum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl.adapters.base import AdapterState, LowRankConfig, Message, Method, RoundControl
from jaxdfl.adapters.lora import init_factors, lora_delta
from jaxdfl.schema import require


def rank_mask(rank: jax.Array, r_max: int) -> jax.Array:
    """``[r_max]`` float: 1 for the first ``rank`` entries."""
    return (jnp.arange(r_max) < rank).astype(jnp.float32)


def _masked(params: dict, mask: jax.Array) -> dict:
    """Each layer's factors with ranks past the device's zeroed: A ``[r, in]`` by row, B ``[out, r]`` by column."""
    return {n: {"a": p["a"] * mask[:, None], "b": p["b"] * mask[None, :]} for n, p in params.items()}


def hetero_lora(r_max: int, alpha: float, a_std: float | None, aggregate: str) -> Method:
    """``aggregate``: ``"pad"`` (HetLoRA) or ``"stack"`` (FLoRA). ``init``'s ``stats`` is the device's rank."""
    scale = alpha / r_max  # one scale for every device: a rank-r_i adapter is a rank-r_max one with zeros

    def init(key, layers, stats=None):
        mask = rank_mask(r_max if stats is None else stats, r_max)
        params = _masked(init_factors(key, layers, r_max, a_std), mask)
        merged = {n: jnp.zeros((fan_out, fan_in)) for n, (fan_in, fan_out) in layers.items()} \
            if aggregate == "stack" else ()
        return AdapterState(params, mask, merged)

    def delta(state, name, x):
        p = state.params.get(name)
        if p is None:
            return None
        a, b = p["a"] * state.frozen[:, None], p["b"] * state.frozen[None, :]  # ranks past r_i get no gradient
        dy = lora_delta(a, b, x, scale)
        return dy if aggregate == "pad" else dy + x @ state.memory[name].T

    def count(state):
        r = state.frozen.sum()
        return sum(r * (p["a"].shape[1] + p["b"].shape[0]) for p in state.params.values())

    def encode(state, ref, key, control: RoundControl):
        sent = count(state)
        if aggregate == "pad":
            values = _masked(state.params, state.frozen)  # zero-padded to r_max
        else:  # the product each device's stacked factors contribute
            values = {n: scale * (p["b"] * state.frozen[None, :]) @ (p["a"] * state.frozen[:, None])
                      for n, p in state.params.items()}
        return Message(values, None, sent, 32.0 * sent), state

    def merge(state, mixed, control: RoundControl):
        if aggregate == "pad":  # truncate the padded average to the device's own ranks
            return state._replace(params=_masked(mixed.values, state.frozen))
        merged = {n: state.memory[n] + mixed.values[n] for n in state.memory}
        params = {n: {"a": p["a"], "b": jnp.zeros_like(p["b"])} for n, p in state.params.items()}
        return state._replace(params=params, memory=merged)

    def density(state):  # the share of the r_max-padded factors the device trains and sends
        share = state.frozen.mean()
        return {name: share for name in state.params}

    return Method(init, delta, encode, merge, density=density)


@dataclass(frozen=True)
class HeteroLoraConfig(LowRankConfig):
    """``hetlora`` (zero-padding) and ``flora`` (stacking): LoRA with one rank per device. ``ranks`` are given
    to the devices in turn (device i gets ``ranks[i % len(ranks)]``: compute classes); ``rank`` must be their
    largest, and ``alpha / rank`` is every device's scale."""

    name: Literal["hetlora", "flora"] = "hetlora"
    ranks: tuple[int, ...] = (2, 4)

    def __post_init__(self):
        super().__post_init__()
        require(len(self.ranks) > 0 and all(r >= 1 for r in self.ranks), "ranks",
                f"needs ranks >= 1, got {list(self.ranks)}")
        require(max(self.ranks) == self.rank, "rank",
                f"must be the largest of ranks {list(self.ranks)} (the padded rank), got {self.rank}")

    def per_device(self, num_devices: int) -> np.ndarray:
        """``[devices]`` int32, each device's rank (what ``init`` gets as ``stats``)."""
        return np.resize(np.asarray(self.ranks, np.int32), num_devices)

    def make(self, batch_size: int) -> Method:
        return hetero_lora(self.rank, self.alpha, self.a_std, "pad" if self.name == "hetlora" else "stack")
