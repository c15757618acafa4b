"""The contracts between the parts of jaxdfl: what a method is, what it sends and receives, and what a round
tells it. Adapters, topologies and the simulation engine import these types from here; nothing here
imports them.

A *method* is a :class:`Method`: pure functions written for ONE device, in the spirit of optax's
``GradientTransformation``. The engine ``vmap``s them over the device axis. A round, for each device:

  1. train ``state.params`` for E steps on ``loss(model(x, hook=delta)) + regularizer(state)``;
  2. ``message, state = encode(state, ref, key, control)``, ``ref`` the params at the start of the round;
  3. the engine mixes every device's message with the round's mixing matrix (:class:`Mixed`);
  4. ``state = merge(state, mixed, control)``.

Equation numbers: A(n) is equation n of Paper A (sparse-and-orthogonal LoRA for decentralized multi-task
fine-tuning), B(n) of Paper B (SOFT and TSFA for wireless federated LoRA); ``docs/methods.md`` says how
each is implemented.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any


class AdapterState(NamedTuple):
    """One device's adapter.

    Attributes:
      params: what the optimizer trains (gradients are taken for these only), ``{layer: ...}``.
      frozen: fixed after ``init`` (static projections, per-device statistics); a method's own typed pytree.
      memory: carried between rounds and updated by ``encode``/``merge`` (error feedback, masks, what was
        last heard); a method's own typed pytree.
    """

    params: PyTree
    frozen: PyTree = ()
    memory: PyTree = ()


class Message(NamedTuple):
    """What one device puts on the air in a round.

    Attributes:
      values: pytree of arrays, the payload (dense layout; absent entries are ignored by mixing).
      mask: pytree of 0/1 arrays like ``values`` marking the entries sent, or None when all are sent.
      count: scalar, number of parameters sent.
      bits: scalar, number of bits sent (values plus any index overhead).
      setup_count, setup_bits: scalars, the part of ``count`` and ``bits`` a device sends once, to every
        device that will ever hold its expert (Paper A's static A and mask positions). The engine charges it
        in the round it appears whether or not the device transmits then, and keeps it out of the round's
        delay budget.
    """

    values: PyTree
    mask: PyTree | None
    count: jax.Array
    bits: jax.Array
    setup_count: jax.Array | float = 0.0
    setup_bits: jax.Array | float = 0.0


class Mixed(NamedTuple):
    """What a device receives after mixing: ``values`` = Σ_j W_ij v_j / Σ_j W_ij m_j per entry, and
    ``mass`` = Σ_j W_ij m_j, zero where no neighbour sent that entry (None for dense messages)."""

    values: PyTree
    mass: PyTree | None


class RoundControl(NamedTuple):
    """What a round tells every device's ``encode`` and ``merge`` (the same for all devices).

    Attributes:
      ratio: the sparsification ratio O^t a controller chose for this round (Paper B's TSFA/OSFA), or None:
        the method uses its configured ratio.
      exchange: bool scalar; this round ends with an inter-cluster exchange (Paper A): devices keep the
        snapshot they hand to the other clusters.
      stored: 0/1 scalar; devices hold the stored experts of the other clusters (from an earlier exchange).
    """

    ratio: jax.Array | None = None
    exchange: jax.Array | bool = False
    stored: jax.Array | float = 0.0


class ExpertView(NamedTuple):
    """The experts one device holds (A(24)), as :attr:`ExpertMixture.infer` sees them.

    Attributes:
      experts: every device's :attr:`ExpertMixture.expert` pytree, stacked ``[M, ...]``, read from the devices
        that own them (unmapped, like the base weights), so no device copies another's projections.
      held: ``[M]`` 1 for the devices this one aggregates with (its cluster or neighbours, itself included):
        their experts use this device's own aggregate.
      stored: ``[M]`` 1 for experts received in an inter-cluster exchange: frozen snapshots, used as sent.
      index: this device's own index (its own expert uses its trainable parameters).
    """

    experts: PyTree
    held: jax.Array
    stored: jax.Array
    index: jax.Array


def expert_views(experts: PyTree, w: jax.Array, stored) -> ExpertView:
    """Every device's :class:`ExpertView` (``held``, ``stored``, ``index`` ``[M, ...]``; ``experts`` shared):
    the devices it aggregates with under the planned mixing matrix ``w`` ``[M, M]`` and, when the scalar
    ``stored`` is on, the stored experts of the devices it gives zero weight (the other clusters)."""
    held = (w != 0).astype(jnp.float32)
    return ExpertView(experts, held, (1.0 - held) * stored, jnp.arange(w.shape[0]))


class ExpertMixture(NamedTuple):
    """The optional ability of a method whose devices answer with a mixture of experts (Paper A's implicit
    MoE, A(24), A(29)).

    Attributes:
      expert: ``(state) -> pytree``, what a device shares as an expert for others' inference.
      infer: ``(state, name, x, view: ExpertView) -> dy``, the delta of a device's inference model over every
        expert it holds.
      train_through: local training runs ``infer`` (the inference mixture, other experts frozen) instead of
        ``delta``; gradients still reach only ``params``.
      route: ``(state, name, x, view) -> [..., E]`` or None: each expert's share of what the mixture selects
        for input ``x`` (the routing diagnostic of :func:`~jaxdfl.sim.evaluate.make_evaluate`).
    """

    expert: Callable[[AdapterState], PyTree]
    infer: Callable[..., jax.Array | None]
    train_through: bool = False
    route: Callable[..., jax.Array | None] | None = None


def has_lora_factors(params: PyTree) -> bool:
    """Whether every adapted layer's params are LoRA factors ``{"a", "b", ...}`` (one device's, or stacked)."""
    return all(isinstance(p, dict) and {"a", "b"} <= set(p) for p in params.values())


def no_regularizer(state: AdapterState) -> jax.Array:
    return jnp.zeros(())


def num_params(tree: PyTree) -> int:
    """Number of scalars in a pytree (for one device)."""
    return int(sum(x.size for x in jax.tree.leaves(tree)))


class Method(NamedTuple):
    """An adapter method: pure functions for one device.

    Attributes:
      init: ``(key, layers, stats=None) -> AdapterState``; ``layers`` maps each adapted linear map's name to
        ``(in, out)``; ``stats`` is what ``calibrate`` returned for this device (None without one).
      delta: ``(state, name, x) -> dy``, what the adapter adds to linear map ``name`` for input ``x``
        ``[..., in]`` (``dy`` ``[..., out]``); None if the layer is not adapted.
      encode: ``(state, ref, key, control: RoundControl) -> (Message, state)``.
      merge: ``(state, Mixed, control: RoundControl) -> state``.
      regularizer: ``(state) -> scalar`` added to the training loss.
      density: ``(state) -> {layer: scalar}``, the share of each layer's params the device trains and sends
        (its activation probability s in A(19)); None = all of them. Trained-parameter counts follow from it.
      calibrate: ``(forward, base, layers, x, n) -> stats``, what the method needs to see of the frozen base
        model on one device's data (``x`` ``[n_max, ...]``, ``n`` real examples) before ``init``; ``forward``
        is ``(base, x, hook) -> ...``. None: ``init`` gets ``stats=None``.
      experts: the :class:`ExpertMixture` ability, or None.
    """

    init: Callable[..., AdapterState]
    delta: Callable[[AdapterState, str, jax.Array], jax.Array | None]
    encode: Callable[..., tuple[Message, AdapterState]]
    merge: Callable[..., AdapterState]
    regularizer: Callable[[AdapterState], jax.Array] = no_regularizer
    density: Callable[[AdapterState], dict] | None = None
    calibrate: Callable[..., PyTree] | None = None
    experts: ExpertMixture | None = None


def layer_density(method: Method, state: AdapterState) -> dict:
    """``{layer: share of its params trained}`` for one device (1 everywhere for dense methods)."""
    if method.density is None:
        return {name: jnp.ones(()) for name in state.params}
    return method.density(state)


def trained_params(method: Method, state: AdapterState) -> jax.Array:
    """The number of parameters one device trains (masked ones only, once masks are fixed)."""
    density = layer_density(method, state)
    return jnp.round(sum(density[name] * num_params(p) for name, p in state.params.items()))


def adapter_hook(method: Method, state: AdapterState, view: ExpertView | None = None):
    """The hook that attaches one device's adapter to the base model: ``method.delta``, or with an
    :class:`ExpertView` the mixture ``method.experts.infer``."""
    if view is None:
        return lambda name, h: method.delta(state, name, h)
    return lambda name, h: method.experts.infer(state, name, h, view)


__all__ = ["AdapterState", "ExpertMixture", "ExpertView", "Message", "Method", "Mixed", "PyTree", "RoundControl",
           "adapter_hook", "expert_views", "has_lora_factors", "layer_density", "no_regularizer", "num_params",
           "trained_params"]
