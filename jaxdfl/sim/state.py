"""The simulation state and what drives one round of it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxdfl.core import AdapterState, RoundControl


class SimState(NamedTuple):
    """Everything a run carries from round to round (and checkpoints).

    Attributes:
      adapter: every device's :class:`~jaxdfl.core.AdapterState`, leaves ``[devices, ...]``.
      opt_state: every device's optax state, leaves ``[devices, ...]``.
      controller: the per-round controller's state, shared by all devices (TSFA/OSFA: the virtual delay
        queue, a scalar); ``()`` without a controller.
      alive: ``[devices]`` bool; False for a device dropped after its loss or adapter went non-finite
        (``on_nonfinite: drop_device``); None for runs that never drop devices.
      server: the server optimizer's optax state over one copy of the global params (``server_optimizer``);
        ``()`` without one.
      variates: SCAFFOLD's :class:`Variates` (``scaffold``); ``()`` without.
      buffer: FedBuff's :class:`~jaxdfl.federation.buffered.Buffer` (``stragglers.rule: buffered``): the
        global model, the server's buffer and each device's job; ``()`` without.
    """

    adapter: AdapterState
    opt_state: Any
    controller: Any = ()
    alive: jax.Array | None = None
    server: Any = ()
    variates: Any = ()
    buffer: Any = ()


class Variates(NamedTuple):
    """SCAFFOLD's control variates (Karimireddy et al. 2020): ``client`` c_i, leaves ``[devices, ...]`` like the
    params, and the server's ``server`` c, one copy."""

    client: Any
    server: Any


class RoundInputs(NamedTuple):
    """What one round takes besides the state; :func:`jaxdfl.sim.round.run_rounds` takes them stacked along a
    leading round axis (``[R, ...]``).

    Attributes:
      key: the round's PRNG key (local batches, random sparsifiers, fading).
      round: int32, the round's index (0-based; the controller's fading draw is keyed by it).
      w: ``[M, M]`` the planned mixing matrix (receiver i averages W_ij of sender j).
      active: ``[K]`` int32 indices of the devices that train and send (client sampling), or None: all.
      control: the round's :class:`~jaxdfl.core.RoundControl` (a controller's ratio is filled in by the
        program itself).
      positions: ``[M, 2]`` device positions (device-to-device network), or None.
      available: ``[M]`` bool, the devices online this round (``availability``), or None: all of them.
      steps: ``[M]`` int32, each device's local steps this round (``stragglers``), or None: all of them.
    """

    key: jax.Array
    round: jax.Array
    w: jax.Array
    active: jax.Array | None
    control: RoundControl
    positions: jax.Array | None
    available: jax.Array | None = None
    steps: jax.Array | None = None


def where_devices(keep: jax.Array, new, old):
    """Every leaf ``[M, ...]`` of ``new`` where ``keep`` ``[M]``, else of ``old``."""
    return jax.tree.map(lambda a, b: jnp.where(keep.reshape(-1, *[1] * (a.ndim - 1)), a, b), new, old)
