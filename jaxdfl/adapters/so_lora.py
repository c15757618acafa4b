"""Sparse-and-orthogonal LoRA (Paper A §IV-B, §IV-D; SPEC §2.1–2.3, §2.6–2.7) and LoRI, its baseline.

For a linear map W0 ∈ R^{d×k} every device adds ``(alpha/r)·(B ⊙ M) A_ref x`` where

* ``A`` ``[r, k]`` is drawn once per device from N(0, a_std²) and never trained nor re-sent (A(16));
  ``A_ref`` is A refined by the device's task (A(26), SPEC §2.7's column-scaling reading):
  ``A_ref = A · diag(√k · h̄/‖h̄‖)``, h̄ the mean input of that map in the frozen base model on the device's
  own data. The √k keeps A's scale (h̄/‖h̄‖ alone would shrink every column by ~1/√k and slow learning
  by as much);
* ``B`` ``[d, r]`` starts at zero and trains on the fixed mask ``M`` only (A(3)). M is calibrated (A(18),
  SPEC §2.2): B trains densely for the first ``calib_rounds`` rounds, then M keeps the top-s share of |B| of
  each layer, and B ← B ⊙ M;
* the densities s_l come from the spectral entropy of each layer (A(20)–(22), :func:`spectral_entropy`,
  :func:`allocate_sparsity`) under a budget Q of trainable B entries, or are one uniform density (LoRI).

After local training a device sends ``B ⊙ M`` (plus A and the mask positions, once). Mixing averages each
position over the devices whose masks hold it (count-normalised, SPEC §2.6) or, ``aggregation: literal``,
over all neighbours (A(10)). A device keeps training its own positions; the mixed matrix B̄ it received is
kept as ``memory["aggregate"]`` (positions nobody sent this round keep what was last heard). On an
inter-cluster exchange round (``control["exchange"]``) a device also keeps ``memory["shared"]`` = B̄ ⊙ M,
the frozen expert it hands to the other clusters (A §IV-C step 4).

At inference (A(24), A(29)) a device answers with every expert it holds (:class:`ExpertView`): each
device j of its own cluster contributes (B̄ ⊙ M_j) A_j,ref x, each stored expert of another cluster its
snapshot. The implicit mixture of experts keeps only the ``top_k`` largest |z| of z = concat_j(A_j,ref x)
(0 = keep all), so no router is trained. With ``train_with_experts`` local training runs this same
mixture (the other experts frozen), instead of the device's own adapter alone (A(3)).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxdfl.adapters.base import AdapterState, ExpertView, Message, Method, no_regularizer
from jaxdfl.sparse.topk import kth_largest, top_k_mask

__all__ = ["DeviceStats", "allocate_sparsity", "so_lora", "spectral_entropy"]


class DeviceStats(NamedTuple):
    """What the frozen base model shows one device about its own data, captured once before training.

    Attributes:
      inputs: ``{name: [rows, k]}`` inputs H⁰ of each adapted linear map (padding rows are zero).
      rows: number of real rows in ``inputs``.
      examples: the device's number of training examples N_i.
      weights: ``{name: [d, k]}`` the base weights W0 of each adapted map (shared by all devices).
    """

    inputs: dict
    rows: jax.Array
    examples: jax.Array
    weights: dict


def spectral_entropy(w0: jax.Array, h: jax.Array) -> jax.Array:
    """Spectral entropy of a layer for a task, A(20)–(21).

    C = HᵀH (``[k, k]``), σ = singular values of W0·C (``[d, k]``), p = σ/Σσ, ℋ = −Σ p log p.

    Args:
      w0: ``[d, k]`` the layer's base weight (maps k → d).
      h: ``[n, k]`` its inputs H⁰ on a batch of the task's data (rows of zeros do not change the result).

    Returns:
      A scalar in [0, log min(d, k)].
    """
    c = h.T @ h
    sigma = jnp.linalg.svd(w0 @ c, compute_uv=False)
    p = sigma / jnp.maximum(sigma.sum(), jnp.finfo(sigma.dtype).tiny)
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def allocate_sparsity(entropy: jax.Array, budget, sizes: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Layer-wise densities from spectral entropy under a budget, A(22) with min (SPEC §2.3):

        x_l = min(λ · softmax(ℋ/τ)_l, size_l),  Σ_l x_l = Q,  s_l = x_l / size_l.

    λ = Q when no layer saturates (A(22) itself); budget a saturated layer cannot hold is spread over the
    others in proportion to their softmax share (water-filling). λ is found exactly: sorting layers by the
    λ at which each saturates, the answer is the one segment whose λ is consistent.

    Args:
      entropy: ``[layers]`` spectral entropies.
      budget: Q, the number of B entries to train (scalar).
      sizes: ``[layers]`` d_l·r_l, the size of each layer's B.
      temperature: τ of the softmax.

    Returns:
      ``[layers]`` densities s with 0 ≤ s ≤ 1 and Σ s·sizes = Q whenever Q ≤ Σ sizes (all ones otherwise).
    """
    sizes = jnp.asarray(sizes, jnp.float32)
    share = jax.nn.softmax(jnp.asarray(entropy, jnp.float32) / temperature)
    budget = jnp.minimum(jnp.asarray(budget, jnp.float32), sizes.sum())
    saturate_at = sizes / share  # λ beyond which layer l is full
    order = jnp.argsort(saturate_at)
    t, p, z = saturate_at[order], share[order], sizes[order]
    full_before = jnp.concatenate([jnp.zeros(1), jnp.cumsum(z)[:-1]])  # the j cheapest layers saturated
    share_after = jnp.flip(jnp.cumsum(jnp.flip(p)))  # Σ_{l≥j} share
    lam = (budget - full_before) / share_after
    lower = jnp.concatenate([jnp.zeros(1), t[:-1]])
    consistent = (lam >= lower * (1 - 1e-6)) & (lam <= t * (1 + 1e-6))
    lam = lam[jnp.argmax(consistent)]
    return jnp.minimum(lam * share, sizes) / sizes


def _entropies_one_at_a_time(stats: DeviceStats, names: list[str]) -> jax.Array:
    """``[layers]`` spectral entropies, each layer's SVD made to wait for the previous one's result.

    Under ``vmap`` every layer's SVD is one batched LAPACK call, and XLA's CPU runtime can deadlock when two
    of them run at once on its intra-op thread pool (seen here on 2 cores: both pool threads parked in
    LAPACK's batch loop, waiting for each other's work). Each layer's input is made to depend on the previous
    entropy (it is H or −H, which have the same singular values; an optimisation barrier alone is compiled
    away), so the SVDs run in turn and the values are unchanged."""
    entropies, previous = [], jnp.zeros((), jnp.float32)
    for name in names:
        h = stats.inputs[name]
        previous = spectral_entropy(stats.weights[name], jnp.where(previous >= 0, h, -h))
        entropies.append(previous)
    return jnp.stack(entropies)


def _unit(v: jax.Array) -> jax.Array:
    return v / jnp.maximum(jnp.linalg.norm(v), 1e-12)


def so_lora(rank: int = 4, alpha: float = 8.0, a_std: float | None = None, *, density: float = 0.5,
            allocation: str = "entropy", temperature: float = 1.0, refine: str = "column", top_k: int | None = None,
            calib_rounds: int = 1, aggregation: str = "masked", budget: str = "density",
            compute_max: float = 0.0, compute_per_param: float = 1.0, batch_size: int = 32,
            bits_per_param: float = 32.0, train_with_experts: bool = False) -> Method:
    """The SO-LoRA method (or LoRI with ``allocation="uniform", refine="none", top_k=0``).

    Args:
      rank, alpha, a_std: LoRA rank r, scale α/r, std of A (None: 1/√k).
      density: share of each device's B entries Σ_l d_l·r that train: the budget Q for ``allocation="entropy"``,
        the density of every layer for ``"uniform"``.
      allocation: ``"entropy"`` (A(20)–(22)) or ``"uniform"`` (LoRI).
      temperature: τ in softmax(ℋ/τ).
      refine: ``"column"`` (A_ref = A·diag(√k·h̄/‖h̄‖)), ``"gate"`` (output × cos(h̄, x), the scalar reading of
        A(27)), or ``"none"``.
      top_k: implicit-MoE top-k over all held experts' z at inference (A(29)); None = r, 0 = keep all.
      calib_rounds: rounds of dense B training before the mask is fixed (1 = SPEC §2.2; more = LoRI-style).
      aggregation: ``"masked"`` (per-position average over the devices holding it) or ``"literal"`` (A(10)).
      budget: ``"density"`` (Q = density·Σ d_l r) or ``"compute"`` (Q = c_max·batch/(ε·N_i), A(7)/(11c)).
      compute_max, compute_per_param, batch_size: c_max, ε and the mini-batch size for ``budget="compute"``.
      bits_per_param: bits per sent value (and per A entry).
      train_with_experts: local training runs the inference mixture of every held expert (others frozen)
        instead of the device's own adapter alone.
    """
    scale = alpha / rank
    k_moe = rank if top_k is None else top_k

    def init(key, layers, stats: DeviceStats):
        names = list(layers)
        keys = jax.random.split(key, len(names))
        frozen, params, mask = {}, {}, {}
        for k_, name in zip(keys, names):
            fan_in, fan_out = layers[name]
            std = a_std if a_std is not None else fan_in ** -0.5
            a = std * jax.random.normal(k_, (rank, fan_in))
            direction = _unit(stats.inputs[name].sum(0) / jnp.maximum(stats.rows, 1))
            if refine == "column":
                a = a * (jnp.sqrt(fan_in) * direction)[None, :]
            frozen[name] = {"a": a, "direction": direction}
            params[name] = {"b": jnp.zeros((fan_out, rank))}
            mask[name] = jnp.ones((fan_out, rank))
        sizes = jnp.array([layers[n][1] * rank for n in names], jnp.float32)
        entropy = _entropies_one_at_a_time(stats, names)
        if budget == "compute":
            q = compute_max * batch_size / (compute_per_param * stats.examples)
        else:
            q = density * sizes.sum()
        if allocation == "entropy":
            s = allocate_sparsity(entropy, q, sizes, temperature)
        else:
            s = jnp.full(len(names), density, jnp.float32)
        keep = jnp.round(s * sizes).astype(jnp.int32)
        frozen = {"layers": frozen, "entropy": entropy, "density": s, "keep": keep}
        memory = {"mask": mask, "aggregate": jax.tree.map(jnp.zeros_like, params),
                  "shared": jax.tree.map(jnp.zeros_like, params), "rounds": jnp.zeros((), jnp.int32)}
        return AdapterState(params, frozen, memory)

    def gate(direction, x):
        return (x @ direction) / jnp.maximum(jnp.linalg.norm(x, axis=-1), 1e-12)

    def delta(state, name, x):
        if name not in state.params:
            return None
        a = state.frozen["layers"][name]["a"]
        b = state.params[name]["b"] * state.memory["mask"][name]
        dy = scale * ((x @ a.T) @ b.T)
        if refine == "gate":
            dy = dy * gate(state.frozen["layers"][name]["direction"], x)[..., None]
        return dy

    def encode(state, ref, key, control=None):
        names = list(state.params)
        rounds = state.memory["rounds"]
        fix_now = rounds + 1 == calib_rounds
        mask, values = {}, {}
        for i, name in enumerate(names):
            b = state.params[name]["b"]
            calibrated = top_k_mask(b, state.frozen["keep"][i])
            mask[name] = jnp.where(fix_now, calibrated, state.memory["mask"][name])
            values[name] = {"b": b * mask[name]}
        sent = sum(m.sum() for m in mask.values())
        a_params = sum(state.frozen["layers"][n]["a"].size for n in names)
        mask_bits = sum(mask[n].size for n in names)
        extra_params = jnp.where(rounds == 0, a_params, 0)  # A goes to every neighbour once, at first contact
        extra_bits = jnp.where(fix_now, mask_bits, 0)  # so do the mask positions, once they are fixed
        count = (sent + extra_params).astype(jnp.float32)
        message_mask = {n: {"b": mask[n]} for n in names}
        state = state._replace(params=values,
                               memory=state.memory | {"mask": mask, "rounds": rounds + 1})
        setup = jnp.asarray(extra_params, jnp.float32)
        return Message(values, message_mask, count, count * bits_per_param + extra_bits, setup,
                       setup * bits_per_param + extra_bits), state

    def merge(state, mixed, control=None):
        exchange = False if control is None else control.get("exchange", False)
        params, aggregate, shared = {}, {}, {}
        for name, p in state.params.items():
            got, mass = mixed.values[name]["b"], mixed.mass[name]["b"]
            if aggregation == "literal":  # Σ_j W_ij (B_j ⊙ M_j): rows of W sum to one
                got = got * mass
            heard = jnp.where(mass > 0, got, state.memory["aggregate"][name]["b"])
            aggregate[name] = {"b": heard}
            params[name] = {"b": jnp.where(mass > 0, got, p["b"]) * state.memory["mask"][name]}
            shared[name] = {"b": jnp.where(exchange, params[name]["b"], state.memory["shared"][name]["b"])}
        return state._replace(params=params, memory=state.memory | {"aggregate": aggregate, "shared": shared})

    def expert(state):
        """What a device shares with others as an expert, per layer: refined A, gate direction, mask, and the
        snapshot B̄ ⊙ M it handed to other clusters at the last exchange."""
        return {name: {"a": f["a"], "direction": f["direction"], "mask": state.memory["mask"][name],
                       "shared": state.memory["shared"][name]["b"]}
                for name, f in state.frozen["layers"].items()}

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
        z = jnp.einsum("erk,...k->...er", e["a"], x)
        if refine == "gate":
            z = z * jax.vmap(gate, in_axes=(0, None), out_axes=-1)(e["direction"], x)[..., None]
        z = z * jnp.maximum(view.held, view.stored)[:, None]
        if k_moe:  # keep |z| ≥ its k-th largest value (exact up to ties of equal nonzero magnitude)
            flat = jnp.abs(z.reshape(*z.shape[:-2], -1))
            kth = kth_largest(flat, min(k_moe, flat.shape[-1]))
            z = jnp.where((flat >= kth).reshape(z.shape), z, 0.0)
        own = jax.nn.one_hot(view.index, view.held.shape[0])
        live = jax.lax.stop_gradient(state.memory["aggregate"][name]["b"])
        mine = state.params[name]["b"] * state.memory["mask"][name]
        b = ((view.held * (1 - own))[:, None, None] * live * e["mask"]
             + (view.stored * (1 - view.held))[:, None, None] * e["shared"])
        out = jnp.einsum("...er,edr->...d", z, b) + z[..., view.index, :] @ mine.T  # one matmul over (expert, rank)
        return scale * out

    def trainable(state):
        return jnp.sum(state.frozen["keep"]).astype(jnp.float32)

    def layer_density(state):
        sizes = jnp.array([p["b"].size for p in state.params.values()], jnp.float32)
        return state.frozen["keep"] / sizes

    return Method(init, delta, no_regularizer, encode, merge, needs_stats=True, expert=expert, infer=infer,
                  trainable=trainable, local_experts=train_with_experts, density=layer_density)
