"""Sparse-and-orthogonal LoRA (Paper A §IV-B, §IV-D) and LoRI, its baseline.

For a linear map W0 ∈ R^{d×k} every device adds ``(alpha/r)·(B ⊙ M) A_ref x`` where

* ``A`` ``[r, k]`` is drawn once per device from N(0, a_std²) and never trained nor re-sent (A(16));
  ``A_ref`` is A refined by the device's task (A(26), column-scaling reading):
  ``A_ref = A · diag(√k · h̄/‖h̄‖)``, h̄ the mean input of that map in the frozen base model on the device's
  own data. The √k keeps A's scale (h̄/‖h̄‖ alone would shrink every column by ~1/√k);
* ``B`` ``[d, r]`` starts at zero and trains on the fixed mask ``M`` only (A(3)). M is calibrated (A(18)): B
  trains densely for the first ``calib_rounds`` rounds, then M keeps the top-s share of |B| of each layer;
* the densities s_l come from the spectral entropy of each layer (A(20)–(22), :mod:`jaxdfl.adapters.spectral`)
  under a budget Q of trainable B entries, or are one uniform density (LoRI).

After local training a device sends ``B ⊙ M`` (plus A and the mask positions, once). Mixing averages each
position over the devices whose masks hold it, or (``aggregation: literal``) over all neighbours (A(10)). A
device keeps training its own positions; the mixed B̄ it received is kept as ``memory.aggregate``. On an
inter-cluster exchange round a device also keeps ``memory.shared`` = B̄ ⊙ M, the frozen expert it hands to
the other clusters (A §IV-C step 4).

At inference (A(24), A(29)) a device answers with every expert it holds (:class:`~jaxdfl.core.ExpertView`):
each device j of its own cluster contributes (B̄ ⊙ M_j) A_j,ref x, each stored expert of another cluster its
snapshot. The implicit mixture keeps only the ``top_k`` largest |z| of z = concat_j(A_j,ref x) (0 = all).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl.adapters.base import (AdapterState, ExpertMixture, ExpertView, Message, Method, MethodConfig,
                                  RoundControl)
from jaxdfl.adapters.spectral import LayerStats, allocate_sparsity, calibration, spectral_entropy
from jaxdfl.schema import require
from jaxdfl.sparse.topk import kth_largest, top_k_mask

SHARED_A_SEED = 20250407  # under shared_a every device (and every run) draws A from this key

__all__ = ["LayerStats", "LoriConfig", "SoLoraConfig", "SoLoraFrozen", "SoLoraMemory", "allocate_sparsity",
           "so_lora", "spectral_entropy"]


class SoLoraFrozen(NamedTuple):
    """Fixed at init. ``a``: ``{name: [r, k]}`` the (refined) static projections; ``direction``: ``{name: [k]}``
    the device's unit mean input per layer; ``entropy``, ``density``: ``[layers]``; ``keep``: ``[layers]`` int,
    the number of B entries each layer trains once the mask is fixed."""

    a: dict
    direction: dict
    entropy: jax.Array
    density: jax.Array
    keep: jax.Array


class SoLoraMemory(NamedTuple):
    """Carried between rounds, all ``{name: [d, r]}`` except ``rounds``: ``mask`` M (dense until calibrated),
    ``aggregate`` the last B̄ heard at each position, ``shared`` the snapshot handed to other clusters at the
    last exchange; ``rounds`` completed."""

    mask: dict
    aggregate: dict
    shared: dict
    rounds: jax.Array


def so_lora(rank: int = 4, alpha: float = 8.0, a_std: float | None = None, *, density: float = 0.5,
            allocation: str = "entropy", temperature: float = 1.0, refine: str = "column", top_k: int | None = None,
            calib_rounds: int = 1, calib_examples: int = 64, aggregation: str = "masked", budget: str = "density",
            compute_max: float = 0.0, compute_per_param: float = 1.0, batch_size: int = 32,
            bits_per_param: float = 32.0, train_with_experts: bool = False, moe_weighting: str = "sum",
            moe_top_k_scope: str = "all", shared_a: bool = False, mask_scope: str = "layer",
            calib_reset: bool = False, merge_weight: float = 1.0) -> Method:
    """The SO-LoRA method (LoRI: ``allocation="uniform", refine="none", top_k=0``); the arguments are the
    keys of :class:`SoLoraConfig`, plus the mini-batch size and the bits per sent value."""
    scale = alpha / rank
    k_moe = rank if top_k is None else top_k

    def init(key, layers, stats: LayerStats):
        keys = jax.random.split(jax.random.key(SHARED_A_SEED) if shared_a else key, len(layers))
        a, params = {}, {}
        for k_, (name, (fan_in, fan_out)) in zip(keys, layers.items()):
            std = a_std if a_std is not None else fan_in ** -0.5
            a[name] = std * jax.random.normal(k_, (rank, fan_in))
            if refine == "column":
                a[name] = a[name] * (jnp.sqrt(fan_in) * stats.direction[name])[None, :]
            params[name] = {"b": jnp.zeros((fan_out, rank))}
        sizes = jnp.array([fan_out * rank for _, fan_out in layers.values()], jnp.float32)
        q = compute_max * batch_size / (compute_per_param * stats.examples) if budget == "compute" \
            else density * sizes.sum()
        s = allocate_sparsity(stats.entropy, q, sizes, temperature) if allocation == "entropy" \
            else jnp.full(len(layers), density, jnp.float32)
        keep = jnp.round(s * sizes).astype(jnp.int32)
        zeros = {name: jnp.zeros((d, rank)) for name, (_, d) in layers.items()}
        memory = SoLoraMemory({name: jnp.ones((d, rank)) for name, (_, d) in layers.items()}, zeros, zeros,
                              jnp.zeros((), jnp.int32))
        return AdapterState(params, SoLoraFrozen(a, stats.direction, stats.entropy, s, keep), memory)

    def gate(direction, x):
        return (x @ direction) / jnp.maximum(jnp.linalg.norm(x, axis=-1), 1e-12)

    def delta(state, name, x):
        if name not in state.params:
            return None
        a = state.frozen.a[name]
        b = state.params[name]["b"] * state.memory.mask[name]
        dy = scale * ((x @ a.T) @ b.T)
        if refine == "gate":
            dy = dy * gate(state.frozen.direction[name], x)[..., None]
        return dy

    def fixed_masks(state):
        """The masks fixed at the end of calibration: the top-|B| of each layer at its own density, or
        (``mask_scope="model"``) of the whole model at the same total count, one threshold for every layer."""
        b = {name: p["b"] for name, p in state.params.items()}
        if mask_scope == "layer":
            return {name: top_k_mask(v, state.frozen.keep[i]) for i, (name, v) in enumerate(b.items())}
        flat = top_k_mask(jnp.concatenate([v.ravel() for v in b.values()]), state.frozen.keep.sum())
        ends = np.cumsum([v.size for v in b.values()])[:-1]
        return {name: part.reshape(v.shape) for (name, v), part in zip(b.items(), jnp.split(flat, ends))}

    def encode(state, ref, key, control: RoundControl):
        rounds = state.memory.rounds
        fix_now = rounds + 1 == calib_rounds
        fixed = fixed_masks(state)
        mask, values = {}, {}
        for name in state.params:
            b = state.params[name]["b"]
            mask[name] = jnp.where(fix_now, fixed[name], state.memory.mask[name])
            if calib_reset:  # LoRI's second stage: B retrains from zero under the mask
                b = jnp.where(fix_now, 0.0, b)
            values[name] = {"b": b * mask[name]}
        sent = sum(m.sum() for m in mask.values())
        a_params = sum(a.size for a in state.frozen.a.values())
        extra_params = jnp.where(rounds == 0, a_params, 0)  # A goes to every neighbour once, at first contact
        extra_bits = jnp.where(fix_now, sum(m.size for m in mask.values()), 0)  # so do the mask positions
        count = (sent + extra_params).astype(jnp.float32)
        state = state._replace(params=values, memory=state.memory._replace(mask=mask, rounds=rounds + 1))
        setup = jnp.asarray(extra_params, jnp.float32)
        return Message(values, {n: {"b": m} for n, m in mask.items()}, count, count * bits_per_param + extra_bits,
                       setup, setup * bits_per_param + extra_bits), state

    def merge(state, mixed, control: RoundControl):
        params, aggregate, shared = {}, {}, {}
        for name, p in state.params.items():
            got, mass = mixed.values[name]["b"], mixed.mass[name]["b"]
            if aggregation == "literal":  # Σ_j W_ij (B_j ⊙ M_j): rows of W sum to one
                got = got * mass
            aggregate[name] = jnp.where(mass > 0, got, state.memory.aggregate[name])
            params[name] = {"b": jnp.where(mass > 0, got, p["b"]) * state.memory.mask[name]}
            shared[name] = jnp.where(control.exchange, params[name]["b"], state.memory.shared[name])
        return state._replace(params=params, memory=state.memory._replace(aggregate=aggregate, shared=shared))

    def expert(state):
        """What a device shares as an expert, per layer: refined A, gate direction, mask, and the snapshot
        B̄ ⊙ M it handed to other clusters at the last exchange."""
        return {name: {"a": a, "direction": state.frozen.direction[name], "mask": state.memory.mask[name],
                       "shared": state.memory.shared[name]} for name, a in state.frozen.a.items()}

    def selected(name, x, view: ExpertView):
        """A(29): ``z`` ``[..., E, r]`` = every held expert's A_e,ref x (gated under ``refine="gate"``), zero for
        experts not held and outside the implicit top-k."""
        e = view.experts[name]
        z = jnp.einsum("erk,...k->...er", e["a"], x)
        if refine == "gate":
            z = z * jax.vmap(gate, in_axes=(0, None), out_axes=-1)(e["direction"], x)[..., None]
        z = z * jnp.maximum(view.held, view.stored)[:, None]
        if k_moe and moe_top_k_scope == "expert":  # A(29) as written: top-k within each expert's r components
            kth = kth_largest(jnp.abs(z), min(k_moe, z.shape[-1]))
            z = jnp.where(jnp.abs(z) >= kth, z, 0.0)
        elif k_moe:  # over all held experts' components together: keep |z| ≥ its k-th largest value (exact up
            flat = jnp.abs(z.reshape(*z.shape[:-2], -1))  # to ties of equal nonzero magnitude)
            kth = kth_largest(flat, min(k_moe, flat.shape[-1]))
            z = jnp.where((flat >= kth).reshape(z.shape), z, 0.0)
        return z

    def route(state, name, x, view: ExpertView):
        """``[..., E]``: each expert's share of the components the implicit top-k keeps for input ``x``
        (the routing diagnostic; every held expert's full share when top-k is off)."""
        if name not in state.params:
            return None
        kept = (selected(name, x, view) != 0).sum(-1).astype(jnp.float32)
        return kept / jnp.maximum(kept.sum(-1, keepdims=True), 1.0)

    def infer(state, name, x, view: ExpertView):
        """Delta of one device's inference model, A(24) + A(29): Σ_e B_e topk(z)_e over held experts e.

        ``view.experts[name]`` ``{"a": [E, r, k], "direction": [E, k], "mask": [E, d, r], "shared": [E, d, r]}``;
        B_e is this device's trainable B ⊙ M for itself, its aggregate B̄ ⊙ M_e for the other experts of its
        cluster (held), and the snapshot for stored experts of other clusters. Only the own term carries a
        gradient. ``x`` ``[..., k]`` → ``[..., d]``.
        """
        if name not in state.params:
            return None
        e = view.experts[name]
        z = selected(name, x, view)
        own = jax.nn.one_hot(view.index, view.held.shape[0])
        live = jax.lax.stop_gradient(state.memory.aggregate[name])
        mine = state.params[name]["b"] * state.memory.mask[name]
        b = ((view.held * (1 - own))[:, None, None] * live * e["mask"]
             + (view.stored * (1 - view.held))[:, None, None] * e["shared"])
        out = jnp.einsum("...er,edr->...d", z, b) + z[..., view.index, :] @ mine.T  # one matmul over (expert, rank)
        if moe_weighting == "mean":  # A(24) as written: each held expert weighted 1/|M|
            out = out / jnp.maximum(jnp.maximum(view.held, view.stored).sum(), 1.0)
        return (merge_weight * scale) * out

    def layer_density(state):
        """Each layer's share of trained B entries: planned (``keep``) until the mask is fixed, then the
        mask's (they differ only under ``mask_scope="model"``, whose split over layers is found by training)."""
        fixed = state.memory.rounds >= calib_rounds
        return {name: jnp.where(fixed, state.memory.mask[name].mean(), state.frozen.keep[i] / p["b"].size)
                for i, (name, p) in enumerate(state.params.items())}

    return Method(init, delta, encode, merge, density=layer_density, calibrate=calibration(calib_examples),
                  experts=ExpertMixture(expert, infer, train_with_experts, route))


@dataclass(frozen=True)
class SoLoraConfig(MethodConfig):
    """``so_lora``: Paper A's proposed method. Each device its own frozen Gaussian A, refined by its task; a
    masked B whose layer densities come from spectral entropy; every held expert mixed by top-k."""

    own_init: ClassVar[bool] = True

    name: Literal["so_lora"] = "so_lora"
    rank: int = 4
    alpha: float = 8.0
    a_std: float | None = None  # std of the Gaussian A; None = 1/sqrt(fan_in)
    density: float = 0.5  # share of B's entries trained: the budget Q / Σ d·r (entropy) or every layer's
    allocation: Literal["entropy", "uniform"] = "entropy"  # layer densities from spectral entropy, or equal
    temperature: float = 1.0  # τ in softmax(entropy/τ)
    refine: Literal["column", "gate", "none"] = "column"  # task-aware refinement of A (A(26)–(27))
    moe_top_k: int | None = None  # implicit-MoE top-k at inference (A(29)); null = rank; 0 = sum all experts
    # top-k over the components of every held expert together, or within each expert (A(29) as written)
    moe_top_k_scope: Literal["all", "expert"] = "all"
    moe_weighting: Literal["sum", "mean"] = "sum"  # held experts summed, or weighted 1/|M| (A(24) as written)
    calib_rounds: int = 1  # rounds of dense B training before the mask is fixed (A(18))
    calib_examples: int = 64  # examples per device for the base-model statistics H⁰
    aggregation: Literal["masked", "literal"] = "masked"  # per-position average, or A(10) over all neighbours
    budget: Literal["density", "compute"] = "density"  # Q from density, or from compute: c_max·batch/(ε·N_i)
    compute_max: float = 0.0  # c_max for budget: compute
    compute_per_param: float = 1.0  # ε for budget: compute
    train_with_experts: bool = False  # local training runs the inference mixture of every held expert
    # LoRI as its authors' code runs it (docs/methods.md): one A for every device; one top-|B| threshold over the
    # whole model after the dense stage; B retrained from zero under the mask; experts merged with weight < 1
    shared_a: bool = False
    mask_scope: Literal["layer", "model"] = "layer"
    calib_reset: bool = False
    merge_weight: float = 1.0  # every expert's weight in the inference mixture (A(24) with w < 1)

    def __post_init__(self):
        require(self.rank >= 1, "rank", f"must be >= 1, got {self.rank}")
        require(self.alpha > 0, "alpha", f"must be > 0 (the LoRA scale is alpha/rank), got {self.alpha}")
        require(self.a_std is None or self.a_std > 0, "a_std", f"must be > 0 or null, got {self.a_std}")
        require(0 < self.density <= 1, "density", f"must be in (0, 1], got {self.density}")
        require(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        require(self.moe_top_k is None or self.moe_top_k >= 0, "moe_top_k", f"must be >= 0, got {self.moe_top_k}")
        require(self.calib_rounds >= 1, "calib_rounds", f"must be >= 1, got {self.calib_rounds}")
        require(self.calib_examples >= 1, "calib_examples", f"must be >= 1, got {self.calib_examples}")
        require(self.budget == "density" or self.compute_max > 0, "compute_max",
                f"must be > 0 when budget is 'compute', got {self.compute_max}")
        require(self.compute_per_param > 0, "compute_per_param", f"must be > 0, got {self.compute_per_param}")
        require(self.merge_weight > 0, "merge_weight", f"must be > 0, got {self.merge_weight}")
        require(self.mask_scope == "layer" or self.allocation == "uniform", "mask_scope",
                "model-wide masks set their own split over layers; use allocation: uniform with them")

    def make(self, batch_size: int) -> Method:
        return so_lora(self.rank, self.alpha, self.a_std, density=self.density, allocation=self.allocation,
                       temperature=self.temperature, refine=self.refine, top_k=self.moe_top_k,
                       calib_rounds=self.calib_rounds, calib_examples=self.calib_examples,
                       aggregation=self.aggregation, budget=self.budget, compute_max=self.compute_max,
                       compute_per_param=self.compute_per_param, batch_size=batch_size,
                       train_with_experts=self.train_with_experts, moe_weighting=self.moe_weighting,
                       moe_top_k_scope=self.moe_top_k_scope, shared_a=self.shared_a, mask_scope=self.mask_scope,
                       calib_reset=self.calib_reset, merge_weight=self.merge_weight)


@dataclass(frozen=True)
class LoriConfig(SoLoraConfig):
    """``lori``: LoRI as Paper A runs it. Per-device frozen A, one uniform density of B, no refinement, every
    held expert summed."""

    name: Literal["lori"] = "lori"
    density: float = 0.1
    allocation: Literal["entropy", "uniform"] = "uniform"
    refine: Literal["column", "gate", "none"] = "none"
    moe_top_k: int | None = 0
