"""Which devices are online in each round, planned on the host like the topology: round r's draw depends only
on the seed and r (resume-safe)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from jaxdfl.errors import ConfigError


def load_trace(path: str, num_devices: int) -> np.ndarray:
    """``[M, T]`` bool from a ``.npy`` or ``.csv`` file of 0/1 (a row per device, a column per round)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"availability.trace: no file at {path}")
    try:
        trace = np.load(file) if file.suffix == ".npy" else np.loadtxt(file, delimiter=",", ndmin=2)
    except (OSError, ValueError) as err:
        raise ConfigError(f"availability.trace: cannot read {path} ({err})") from None
    trace = np.asarray(trace)
    if trace.ndim != 2 or trace.shape[0] != num_devices or trace.shape[1] == 0:
        raise ConfigError(f"availability.trace: {path} must hold one row per device ({num_devices}) and a column "
                          f"per round, got shape {trace.shape}")
    if not np.isin(trace, (0, 1)).all():
        raise ConfigError(f"availability.trace: {path} must hold only 0 and 1")
    return trace.astype(bool)


def availability_plan(avail_cfg, num_devices: int, seed: int) -> Callable[[int], np.ndarray] | None:
    """``online(round) -> [M]`` bool from the ``availability`` section, or None when every device is always
    online."""
    if avail_cfg.always:
        return None
    if avail_cfg.trace:
        trace = load_trace(avail_cfg.trace, num_devices)
        return lambda round_: trace[:, round_ % trace.shape[1]]
    rates = np.full(num_devices, avail_cfg.rate)
    if avail_cfg.rates:
        if len(avail_cfg.rates) != num_devices:
            raise ConfigError(f"availability.rates: needs one probability per device ({num_devices}), got "
                              f"{len(avail_cfg.rates)}")
        rates = np.asarray(avail_cfg.rates, np.float64)
    return lambda round_: np.random.default_rng([seed, 5, round_]).random(num_devices) < rates


def poisson_plan(privacy_cfg, num_devices: int, seed: int, online: Callable[[int], np.ndarray] | None
                 ) -> Callable[[int], np.ndarray] | None:
    """``drawn(round) -> [M]`` bool, the clients of DP's Poisson sampling (each with probability
    ``privacy.sample_rate``, keyed by ``[seed, 8, round]``; only online ones when ``online`` is given), or None
    without it."""
    if privacy_cfg.mechanism == "none" or privacy_cfg.sampling != "poisson":
        return None
    q = privacy_cfg.sample_rate

    def drawn(round_: int) -> np.ndarray:
        chosen = np.random.default_rng([seed, 8, round_]).random(num_devices) < q
        return chosen if online is None else chosen & online(round_)

    return drawn


def steps_plan(straggler_cfg, num_devices: int, local_steps: int, seed: int
               ) -> Callable[[int], np.ndarray] | None:
    """``steps(round) -> [M]`` int32, each device's local steps that round (stragglers), or None when every
    device always does all ``local_steps``."""
    if straggler_cfg.spread == 0:
        return None
    low = 1.0 - straggler_cfg.spread

    def steps(round_: int) -> np.ndarray:
        speed = np.random.default_rng([seed, 9, round_]).uniform(low, 1.0, num_devices)
        return np.clip(np.ceil(local_steps * speed), 1, local_steps).astype(np.int32)

    return steps


def sample_online(rng: np.random.Generator, online: np.ndarray, k: int) -> np.ndarray:
    """``[k]`` sorted client indices: k drawn from the ``online`` devices, or all of them and then offline ones
    when fewer than k are online (those train and send nothing: the program masks them)."""
    up, down = np.flatnonzero(online), np.flatnonzero(~online)
    picked = rng.choice(up, min(k, len(up)), replace=False)
    if len(picked) < k:
        picked = np.concatenate([picked, rng.choice(down, k - len(picked), replace=False)])
    return np.sort(picked).astype(np.int32)
