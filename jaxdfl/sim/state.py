"""The simulation state: every leaf carries the device axis first."""

from __future__ import annotations

from typing import Any, NamedTuple

from jaxdfl.adapters.base import AdapterState


class SimState(NamedTuple):
    """``adapter``: every device's :class:`AdapterState` (leaves ``[devices, ...]``); ``opt_state``: every
    device's optax state (leaves ``[devices, ...]``)."""

    adapter: AdapterState
    opt_state: Any
