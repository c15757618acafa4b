"""How the device axis is laid out for a run: the form W takes (dense or neighbour lists), how many devices
the mesh holds (the real ones, padded with inert ones to a multiple of the chip count), and which devices an
evaluation scores."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np

from jaxdfl.core import Method
from jaxdfl.errors import ConfigError
from jaxdfl.network.channels import Channel
from jaxdfl.sim.padding import padded_size
from jaxdfl.topology import Topology

if TYPE_CHECKING:
    from jaxdfl.config import Config


# Sparse mixing is chosen when each device averages at most this share of all devices: where the gather
# loop and the dense product cost the same (experiments/bench_scale.py, "mixing alone"): D ≈ M/35 on this
# CPU at 1,024 and 4,096 devices; on an H200 D ≈ M/200 at 4,096 and M/80 at 16,384 (the einsum runs near
# peak there). TPUs were not measured and take the GPU's rule.
SPARSE_BELOW = {"cpu": 1 / 32, "accelerator": 1 / 256}


def sparse_mixing(cfg: Config, topology: Topology, method: Method, channel: Channel | None) -> bool:
    """Whether rounds mix over neighbour lists (``topology.mixing_form``). Needs a topology that has them,
    and neither a wireless channel nor a mixture of experts (both read the whole ``[M, M]`` W)."""
    form = cfg.topology.mixing_form
    why_dense = (f"has no neighbour lists (topology.name: {cfg.topology.name})" if topology.neighbours is None else
                 "runs over a wireless channel (network.name: d2d)" if channel is not None else
                 f"uses experts of every device it holds (method.name: {cfg.method.name})"
                 if method.experts is not None else None)
    if form == "sparse" and why_dense:
        raise ConfigError(f"topology.mixing_form: sparse, but this run {why_dense}; use auto or dense")
    if form == "auto":
        share = SPARSE_BELOW["cpu" if jax.default_backend() == "cpu" else "accelerator"]
        return why_dense is None and topology.width <= share * cfg.num_devices
    return form == "sparse"


def padded_devices(cfg: Config, method: Method) -> int:
    """M' ≥ M: the devices the program holds, the real ones first (:mod:`jaxdfl.sim.padding`). Padded to a
    multiple of the chip count when the chips do not divide M, unless the rounds read W as a whole (an
    expert mixture, a wireless channel, clusters with exchanges, a controller)."""
    m, chips = cfg.num_devices, jax.device_count()
    whole_w = (method.experts is not None or cfg.network.name == "d2d" or cfg.topology.name == "clusters"
               or cfg.control.name != "none")
    return m if whole_w else padded_size(m, chips)


def evaluation_sample(cfg: Config, padded: bool = False) -> np.ndarray | None:
    """The devices evaluations score: a fixed random sample of ``eval_devices`` (sorted), or None for all
    (``padded``: all the real ones, by index)."""
    if not cfg.eval_devices or cfg.eval_devices >= cfg.num_devices:
        return np.arange(cfg.num_devices, dtype=np.int32) if padded else None
    rng = np.random.default_rng([cfg.seed, 5])
    return np.sort(rng.choice(cfg.num_devices, cfg.eval_devices, replace=False)).astype(np.int32)
