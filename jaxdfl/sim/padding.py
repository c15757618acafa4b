"""Padding the device axis to a multiple of the chip count with inert devices, so every chip is used.

Without padding the mesh can only take ``gcd(num_devices, chips)`` chips (10 devices on 8 chips use 2). With
it, M real devices become M' = the next multiple of the chip count; devices M … M'−1 are *inert*: they hear
only themselves and nobody hears them (their rows and columns of W are those of the identity), so their
adapters never change and reach no one; the round program leaves them out of every metric
(:func:`~jaxdfl.sim.round.make_round_step`'s ``real``), and evaluation scores only real devices. They still
run the (discarded) local training of their slot, at most chips − 1 devices' worth of work.

Runs whose rounds read W as a whole (an expert mixture, a wireless channel, cluster exchanges, a server-side
controller) are not padded: they keep the gcd rule.
"""

from __future__ import annotations

import numpy as np

from jaxdfl.topology import Neighbours


def padded_size(m: int, chips: int) -> int:
    """The next multiple of ``chips`` at or above ``m``."""
    return -(-m // chips) * chips


def pad_mixing(w, m_pad: int):
    """W ``[..., M, M]`` (or neighbour lists ``[..., M, D]``) of M real devices, for M' = ``m_pad`` devices:
    each inert device keeps only itself (weight 1), and no real device hears one."""
    if isinstance(w, Neighbours):
        m, width = w.index.shape[-2:]
        lead = w.index.shape[:-2]
        own = np.broadcast_to(np.arange(m, m_pad, dtype=np.int32)[:, None], (*lead, m_pad - m, width))
        alone = np.zeros((*lead, m_pad - m, width), np.float32)
        alone[..., 0] = 1.0
        return Neighbours(np.concatenate([w.index, own], -2), np.concatenate([w.weight, alone], -2))
    m = w.shape[-1]
    out = np.zeros((*w.shape[:-2], m_pad, m_pad), np.float32)
    out[..., :m, :m] = w
    out[..., np.arange(m, m_pad), np.arange(m, m_pad)] = 1.0
    return out


def real_part(w, m: int):
    """The real devices' block of a padded W (or their lists; real rows never name an inert device)."""
    if isinstance(w, Neighbours):
        return Neighbours(w.index[..., :m, :], w.weight[..., :m, :])
    return w[..., :m, :m]


def pad_rows(index: np.ndarray, n: np.ndarray, m_pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Each device's rows of the example pool (``index`` ``[M, n_max]``, ``n`` ``[M]``) with inert devices
    that hold device 0's rows (so their discarded training reads real examples and stays finite)."""
    extra = m_pad - len(n)
    return (np.concatenate([index, np.repeat(index[:1], extra, 0)]),
            np.concatenate([n, np.repeat(n[:1], extra)]))


def pad_devices(per_device: np.ndarray, m_pad: int, fill) -> np.ndarray:
    """Per-device round inputs ``[..., M]`` (online flags, local steps) for M' = ``m_pad`` devices, inert
    devices given ``fill`` (online; all their steps: they hear only themselves either way)."""
    extra = np.full((*per_device.shape[:-1], m_pad - per_device.shape[-1]), fill, per_device.dtype)
    return np.concatenate([per_device, extra], -1)
