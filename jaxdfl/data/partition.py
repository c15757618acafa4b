"""Partitioners: which training examples each simulated device holds.

Each returns a list of index arrays, one per device, into a pool of ``n`` examples with labels ``labels``.
"""

from __future__ import annotations

import numpy as np

from jaxdfl.errors import ConfigError


def task_per_device(task_of_example: np.ndarray, num_devices: int, num_tasks: int) -> list[np.ndarray]:
    """Paper A: device i holds task ``i mod num_tasks``; devices sharing a task split its examples evenly."""
    if num_devices < num_tasks:
        raise ConfigError(f"num_devices={num_devices} is fewer than the {num_tasks} tasks of a task-per-device "
                          "partition; add devices or drop tasks")
    parts: list[np.ndarray] = [np.empty(0, np.int64)] * num_devices
    for t in range(num_tasks):
        owners = list(range(t, num_devices, num_tasks))
        for dev, idx in zip(owners, np.array_split(np.flatnonzero(task_of_example == t), len(owners))):
            parts[dev] = idx
    return parts


def iid(n: int, num_devices: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Uniformly shuffled, equal-size parts."""
    return [np.sort(p) for p in np.array_split(rng.permutation(n), num_devices)]


def label_shards(labels: np.ndarray, num_devices: int, shards_per_device: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
    """Paper B's non-IID split: sort by label, cut into ``num_devices·shards_per_device`` shards, deal each
    device ``shards_per_device`` random shards. Fewer shards per device = fewer labels per device."""
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, num_devices * shards_per_device)
    deal = rng.permutation(len(shards)).reshape(num_devices, shards_per_device)
    return [np.sort(np.concatenate([shards[s] for s in row])) for row in deal]


def dirichlet(labels: np.ndarray, num_devices: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Per class, split its examples over devices in proportions drawn from Dirichlet(alpha·1)."""
    owner = np.empty(len(labels), np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(num_devices, alpha))) * len(idx)).astype(int)[:-1]
        owner[idx] = np.repeat(np.arange(num_devices), np.diff(np.concatenate([[0], cuts, [len(idx)]])))
    order = np.argsort(owner, kind="stable")  # indices grouped by device, ascending within each
    return np.split(order, np.cumsum(np.bincount(owner, minlength=num_devices))[:-1])
