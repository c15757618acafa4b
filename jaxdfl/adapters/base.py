"""What every method's module shares: the base of its config section and the plain send/merge rules.

The contract types themselves (:class:`~jaxdfl.core.Method`, :class:`~jaxdfl.core.AdapterState`,
:class:`~jaxdfl.core.Message`, ...) live in :mod:`jaxdfl.core`; they are re-exported here for methods' files.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxdfl.core import (AdapterState, ExpertMixture, ExpertView, Message, Method, Mixed, PyTree, RoundControl,
                         no_regularizer, num_params)
from jaxdfl.schema import require


@dataclass(frozen=True)
class MethodConfig:
    """The ``method`` section: each method's own config class extends this one, lists its name(s) in a
    ``Literal`` and builds its :class:`Method` with ``make(batch_size) -> Method``.

    Class attributes read by checks across sections: ``sends_deltas`` (a client sends local − global, so
    weights that do not sum to one, and Paper B's controllers, suit it), ``own_init`` (each device draws its
    own adapter by default, as Paper A's static projections are).
    """

    sends_deltas: ClassVar[bool] = False
    own_init: ClassVar[bool] = False

    name: str = ""
    # every device starts from the same adapter draw (FedAvg-style); null = the method's default
    shared_init: bool | None = None

    def per_device(self, num_devices: int):
        """Per-device settings ``[devices, ...]`` that ``init`` receives as ``stats`` when the method has no
        ``calibrate`` (heterogeneous LoRA: each device's rank), or None."""
        return None

    @property
    def per_device_init(self) -> bool:
        """Whether each device draws its own adapter init."""
        return self.own_init if self.shared_init is None else not self.shared_init


@dataclass(frozen=True)
class LowRankConfig(MethodConfig):
    """Keys shared by the LoRA family: rank r, scale alpha/r and the std of the Gaussian A."""

    rank: int = 4
    alpha: float = 8.0  # LoRA scale is alpha / rank
    a_std: float | None = None  # std of the Gaussian A; None = 1/sqrt(fan_in)

    def __post_init__(self):
        require(self.rank >= 1, "rank", f"must be >= 1, got {self.rank}")
        require(self.alpha > 0, "alpha", f"must be > 0 (the LoRA scale is alpha/rank), got {self.alpha}")
        require(self.a_std is None or self.a_std > 0, "a_std", f"must be > 0 or null, got {self.a_std}")


def send_dense(state: AdapterState, ref: PyTree, key: jax.Array, control: RoundControl):
    """Send every trainable parameter as it is (no compression), 32 bits each."""
    count = jnp.asarray(num_params(state.params), jnp.float32)
    return Message(state.params, None, count, count * 32.0), state


def take_mixed(state: AdapterState, mixed: Mixed, control: RoundControl) -> AdapterState:
    """Replace the trainable parameters by the mixed ones."""
    return state._replace(params=mixed.values)


__all__ = ["AdapterState", "ExpertMixture", "ExpertView", "LowRankConfig", "Message", "Method", "MethodConfig",
           "Mixed", "RoundControl", "no_regularizer", "num_params", "send_dense", "take_mixed"]
