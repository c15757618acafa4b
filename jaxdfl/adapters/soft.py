"""SOFT, sparsified orthogonal fine-tuning (Paper B §III, Alg. 1), and its sparsified-LoRA baselines.

Clients train both LoRA factors from the global model, with SOFT's orthogonality regulariser (B(2))
when ``zeta > 0``:

    ζ · Σ_layers ( ‖BᵀB − diag(BᵀB)‖²_F + ‖AAᵀ − diag(AAᵀ)‖²_F ).

After training, a client sends a sparsified *delta* with error feedback (B(4)–B(7)):

    u = m + Δ,  Δ = local − global;   message = S(u);   m ← u − message.

S is one of :data:`jaxdfl.sparse.lora.SELECTORS` (``soft``, ``tlora``, ``rlora``, ``slora``, ``ilora``).
The residual m is ``state.memory``, a pytree like ``params`` (empty without error feedback: then u = Δ).
A client that is not sampled in a round runs none of this, so its memory carries over unchanged (the
engine trains and encodes sampled clients only).

After sending, the client's params are reset to the global model it started from, and ``merge`` adds the
mixed deltas to it. Under the server topology's ``unbiased`` weights (N/K)·p_k this is the
unbiased update θ^{t+1} = θ^t + (N/K)·Σ_{k∈K^t} p_k·message_k (``docs/methods.md``, Paper B).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp

from jaxdfl.adapters.base import AdapterState, LowRankConfig, Message, Method, RoundControl
from jaxdfl.adapters.lora import init_factors, lora_delta
from jaxdfl.schema import require
from jaxdfl.sparse.lora import SELECTORS, allocate, importance

__all__ = ["SparseLoraConfig", "allocate", "importance", "orthogonality_penalty", "sparse_lora"]


def _off_diagonal_sq(gram: jax.Array) -> jax.Array:
    return jnp.sum(gram ** 2) - jnp.sum(jnp.diagonal(gram) ** 2)


def orthogonality_penalty(factors: dict) -> jax.Array:
    """‖BᵀB − diag(BᵀB)‖²_F + ‖AAᵀ − diag(AAᵀ)‖²_F for one layer's ``{"b": [d, r], "a": [r, k]}`` (B(2))."""
    return _off_diagonal_sq(factors["b"].T @ factors["b"]) + _off_diagonal_sq(factors["a"] @ factors["a"].T)


def sparse_lora(selector: str = "soft", rank: int = 4, alpha: float = 8.0, a_std: float | None = None,
                ratio: float = 0.5, error_feedback: bool = True, zeta: float = 0.0) -> Method:
    """A LoRA method that sends sparsified deltas: ``selector`` picks the entries (``docs/methods.md``, Paper B)."""
    select = SELECTORS[selector]
    scale = alpha / rank

    def init(key, layers, stats=None):
        params = init_factors(key, layers, rank, a_std)
        return AdapterState(params, (), jax.tree.map(jnp.zeros_like, params) if error_feedback else ())

    def delta(state, name, x):
        p = state.params.get(name)
        return None if p is None else lora_delta(p["a"], p["b"], x, scale)

    def regularizer(state):
        if zeta == 0.0:
            return jnp.zeros(())
        return zeta * sum(orthogonality_penalty(p) for p in state.params.values())

    def encode(state, ref, key, control: RoundControl):
        o = ratio if control.ratio is None else control.ratio  # TSFA/OSFA set O^t per round
        update = jax.tree.map(jnp.subtract, state.params, ref)
        if error_feedback:
            update = jax.tree.map(jnp.add, state.memory, update)
        keys = jax.random.split(key, len(update))
        masks = {name: select(update[name], state.params[name], o, k) for k, name in zip(keys, update)}
        sent = jax.tree.map(jnp.multiply, update, masks)
        memory = jax.tree.map(jnp.subtract, update, sent) if error_feedback else state.memory
        count = sum(jnp.sum(m) for m in jax.tree.leaves(masks))
        # Absent entries are zeros that add nothing to the sum, so the message is dense (mask=None) for mixing.
        return Message(sent, None, count, 32.0 * count), AdapterState(ref, state.frozen, memory)

    def merge(state, mixed, control: RoundControl):
        return state._replace(params=jax.tree.map(jnp.add, state.params, mixed.values))

    return Method(init, delta, encode, merge, regularizer)


@dataclass(frozen=True)
class SparseLoraConfig(LowRankConfig):
    """Paper B's delta senders; the name is the sparsifier (:data:`jaxdfl.sparse.lora.SELECTORS`)."""

    sends_deltas: ClassVar[bool] = True

    name: Literal["soft", "tlora", "rlora", "slora", "ilora"] = "soft"
    ratio: float = 0.5  # sparsification ratio O: share of r·(d+k) entries sent per layer
    error_feedback: bool = True  # accumulate what was not sent and add it to the next update
    zeta: float = 0.0  # weight of SOFT's orthogonality regulariser (B(2)); 0 = off

    def __post_init__(self):
        super().__post_init__()
        require(0 < self.ratio <= 1, "ratio", f"must be in (0, 1], got {self.ratio}")
        require(self.zeta >= 0, "zeta", f"must be >= 0, got {self.zeta}")

    def make(self, batch_size: int) -> Method:
        return sparse_lora(self.name, self.rank, self.alpha, self.a_std, self.ratio, self.error_feedback, self.zeta)
