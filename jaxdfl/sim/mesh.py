"""Placing the simulation on accelerators: the device axis shards over the mesh axis ``"devices"``."""

from __future__ import annotations

import math

import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec

DEVICE_AXIS = "devices"


def make_mesh(num_sim_devices: int) -> jax.sharding.Mesh:
    """A 1-D mesh over as many accelerators as evenly divide the simulated devices (gcd; the caller pads the
    device axis to a multiple of the chip count where it can, :mod:`jaxdfl.sim.padding`), so each chip holds
    ``num_sim_devices / n`` simulated devices. Auto axis types: XLA propagates the sharding through the
    vmapped round and inserts the collectives the mixing einsum needs."""
    n = math.gcd(num_sim_devices, jax.device_count())
    return jax.make_mesh((n,), (DEVICE_AXIS,), axis_types=(AxisType.Auto,), devices=jax.devices()[:n])


def sharded(mesh) -> NamedSharding:
    """Leading (device) axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(DEVICE_AXIS))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
