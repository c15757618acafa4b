"""The contract every adapter method fulfils (in the spirit of optax's ``GradientTransformation``).

A method is a NamedTuple of pure functions written for ONE device; the engine vmaps them over the device
axis. Nothing here knows about devices, rounds, topologies or sharding.

One device's adapter is an :class:`AdapterState` of three pytrees:
  * ``params`` — what the optimizer trains (gradients are taken for these only);
  * ``frozen`` — fixed after init: frozen projections, masks, per-device statistics;
  * ``memory`` — method-owned state carried between rounds (error feedback, …), updated by ``encode``.

A round, as the engine runs it for each device:
  1. train ``params`` for E steps on ``loss(model(x, hook=delta)) + regularizer(state)``;
  2. ``message, state = encode(state, ref, key, control)`` — ``ref`` is the params at the start of the round,
     ``control`` the round's controller decisions shared by all devices (e.g. ``{"ratio": O^t}``), or None;
  3. the engine mixes every device's ``message.values`` with the round's mixing matrix (SPEC §5; entries
     absent under ``message.mask`` are normalised out);
  4. ``state = merge(state, mixed, control)``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

PyTree = Any


class AdapterState(NamedTuple):
    params: PyTree
    frozen: PyTree
    memory: PyTree


class Message(NamedTuple):
    """What one device puts on the air in a round.

    Attributes:
      values: pytree of arrays, the payload (dense layout; absent entries are ignored by mixing).
      mask: pytree of 0/1 arrays like ``values`` marking the entries sent, or None when all are sent.
      count: scalar, number of parameters sent.
      bits: scalar, number of bits sent (values plus any index overhead).
      setup_count, setup_bits: scalars, the part of ``count`` and ``bits`` that a device sends once, to every
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
    """What a device receives after mixing: ``values`` = Σ_j W_ij v_j / Σ_j W_ij m_j per entry (SPEC §5), and
    ``mass`` = Σ_j W_ij m_j, zero where no neighbour sent that entry (None for dense messages)."""

    values: PyTree
    mass: PyTree | None


class ExpertView(NamedTuple):
    """The experts one device holds (A(24)), as :attr:`Method.infer` sees them.

    Attributes:
      experts: every device's :attr:`Method.expert` pytree, stacked ``[M, ...]``. Read from the devices that
        own them (unmapped, like the base weights), so no device copies another's projections.
      held: ``[M]`` 1 for the devices this one aggregates with (its cluster or neighbours, itself included):
        their experts use this device's own aggregate of B.
      stored: ``[M]`` 1 for experts received in an inter-cluster exchange: frozen snapshots, used as they
        were sent.
      index: this device's own index (its own expert uses its trainable parameters).
    """

    experts: PyTree
    held: jax.Array
    stored: jax.Array
    index: jax.Array


class Method(NamedTuple):
    """An adapter method: pure functions for one device.

    Attributes:
      init: ``(key, layers) -> AdapterState``; ``layers`` maps each adapted linear map's name to ``(in, out)``.
      delta: ``(state, name, x) -> dy``; what the adapter adds to linear map ``name`` for input
        ``x`` ``[..., in]`` (``dy`` ``[..., out]``); None if the layer is not adapted.
      regularizer: ``(state) -> scalar`` added to the training loss.
      encode: ``(state, ref, key, control=None) -> (Message, state)``; ``ref`` is ``params`` at the start of
        the round; ``control`` a dict of per-round scalars from a controller (methods ignore what they do
        not use).
      merge: ``(state, Mixed, control=None) -> state`` after mixing (``control`` as for ``encode``; e.g.
        ``{"exchange": flag}`` on inter-cluster exchange rounds).
      needs_stats: when True, ``init`` takes a third argument, the device's
        :class:`~jaxdfl.adapters.so_lora.DeviceStats` (base-model inputs of each adapted map on its own data).
      expert: ``(state) -> pytree`` what a device shares as an expert for others' inference, or None.
      infer: ``(state, name, x, view: ExpertView) -> dy`` the inference-time delta over every expert the
        device holds; None = evaluate with ``delta``.
      local_experts: when True, local training runs ``infer`` (the device's inference model, every held
        expert in the forward pass) instead of ``delta``; gradients still reach only ``params``.
      trainable: ``(state) -> scalar`` number of trained parameters (e.g. the masked ones); None = all params.
      density: ``(state) -> [layers]`` share of each layer's positions the device trains and sends (its
        activation probability s in A(19)); None = dense (1 everywhere).
    """

    init: Callable[..., AdapterState]
    delta: Callable[[AdapterState, str, jax.Array], jax.Array | None]
    regularizer: Callable[[AdapterState], jax.Array]
    encode: Callable[..., tuple[Message, AdapterState]]
    merge: Callable[..., AdapterState]
    needs_stats: bool = False
    expert: Callable[[AdapterState], PyTree] | None = None
    infer: Callable[..., jax.Array | None] | None = None
    trainable: Callable[[AdapterState], jax.Array] | None = None
    local_experts: bool = False
    density: Callable[[AdapterState], jax.Array] | None = None


def num_params(tree: PyTree) -> int:
    """Number of scalars in a pytree (for one device)."""
    return int(sum(x.size for x in jax.tree.leaves(tree)))


def no_regularizer(state: AdapterState) -> jax.Array:
    return jax.numpy.zeros(())


def send_dense(state: AdapterState, ref: PyTree, key: jax.Array, control: dict | None = None):
    """Send every trainable parameter as it is (no compression), 32 bits each."""
    count = jax.numpy.asarray(num_params(state.params), jax.numpy.float32)
    return Message(state.params, None, count, count * 32.0), state


def take_mixed(state: AdapterState, mixed: Mixed, control: dict | None = None) -> AdapterState:
    """Replace the trainable parameters by the mixed ones."""
    return state._replace(params=mixed.values)
