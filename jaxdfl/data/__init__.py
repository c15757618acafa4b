"""Datasets and partitioners: every example stored once, each device holding indices into that pool."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxdfl.data import partition
from jaxdfl.data.digits import NUM_CLASSES, TASKS, TaskSplit, pretrain_split, task_splits
from jaxdfl.errors import ConfigError, warn


class FederatedData(NamedTuple):
    """The training pool, which of its examples each device holds, and every task's test set.

    Attributes:
      pool_x: ``[N, 8, 8]`` every training image once, or for text ``[N, 4, L]`` packed examples
        (:mod:`jaxdfl.data.text_encoding`); pool_y: ``[N]`` labels.
      index: ``[devices, n_max]`` int32 rows of the pool each device holds (entries past ``n[i]`` are 0,
        padding); devices may share rows (``data.examples_per_device``).
      n: ``[devices]`` number of examples per device.
      task_of_device: ``[devices]`` task index of each device, or -1 when its data mixes tasks.
      test_x: ``[tasks, m_max, 8, 8]``; test_y: ``[tasks, m_max]``; test_n: ``[tasks]``.
      task_names: names of the tasks, in test-set order.
      chance: majority-class accuracy of each task's test set.
      num_choices, reply_tokens: text only, the most choices and the most reply tokens (all choices) of any
        example (0 for images).
      test_examples: text only, every task's test examples as text (for exact match of generated answers).
    """

    pool_x: np.ndarray
    pool_y: np.ndarray
    index: np.ndarray
    n: np.ndarray
    task_of_device: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_n: np.ndarray
    task_names: tuple[str, ...]
    chance: tuple[float, ...]
    num_choices: int = 0
    reply_tokens: int = 0
    test_examples: tuple[tuple, ...] | None = None

    @property
    def x(self) -> np.ndarray:
        """``[devices, n_max, ...]`` each device's examples as a copy (zero past ``n[i]``)."""
        return self._per_device(self.pool_x)

    @property
    def y(self) -> np.ndarray:
        """``[devices, n_max]`` each device's labels as a copy (zero past ``n[i]``)."""
        return self._per_device(self.pool_y)

    def _per_device(self, pool: np.ndarray) -> np.ndarray:
        held = np.arange(self.index.shape[1]) < self.n[:, None]
        return np.where(held.reshape(*held.shape, *[1] * (pool.ndim - 1)), pool[self.index], 0).astype(pool.dtype)


def _pad_stack(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    counts = np.array([len(a) for a in arrays], np.int32)
    out = np.zeros((len(arrays), counts.max(), *arrays[0].shape[1:]), arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out, counts


TEXT_SPLIT_SEED = 20261124  # generated text tasks are the same for every run seed, like the digits split


def text_splits(data_cfg, tokenizer) -> tuple[list[TaskSplit], tuple[int, int], tuple[tuple, ...]]:
    """Every text task's train and test examples, encoded to one shape (``[n, 4, L]``), the static sizes
    ``(num_choices, reply_tokens)``, and every task's test examples as text."""
    from jaxdfl.data import tables, text_datasets, text_encoding, text_tasks

    if tokenizer is None:
        raise ConfigError(f"data.name: {data_cfg.name} needs a tokenizer, and the model has none (a Hugging Face "
                          "directory needs tokenizer.json or tokenizer_config.json)")
    if data_cfg.name == "text_tasks":
        pairs = [text_tasks.task_split(t, data_cfg.train_per_task, data_cfg.test_per_task, TEXT_SPLIT_SEED)
                 for t in data_cfg.tasks]
    else:
        where = lambda f: f if f.startswith(tables.HUB) else Path(f).expanduser()  # noqa: E731
        pairs = [(text_datasets.load_dataset_file(t, where(train), limit=data_cfg.train_per_task),
                  text_datasets.load_dataset_file(t, where(test), limit=data_cfg.test_per_task))
                 for t, train, test in zip(data_cfg.tasks, data_cfg.train_files, data_cfg.test_files)]
    examples = [ex for pair in pairs for part in pair for ex in part]
    x, y, num_choices, reply_tokens = text_encoding.encode(examples, tokenizer, data_cfg.max_tokens)
    splits, at = [], 0
    for name, (train, test) in zip(data_cfg.tasks, pairs):
        a, b, c = at, at + len(train), at + len(train) + len(test)
        splits.append(TaskSplit(name, x[a:b], y[a:b], x[b:c], y[b:c]))
        at = c
    return splits, (num_choices, reply_tokens), tuple(tuple(test) for _, test in pairs)


def task_names(data_name: str) -> tuple[str, ...]:
    """The task names dataset ``data.name`` offers."""
    if data_name == "digits_multitask":
        return tuple(TASKS)
    if data_name == "cifar100":
        return ("cifar100",)
    if data_name == "text_tasks":
        from jaxdfl.data.text_tasks import TASKS as TEXT_TASKS

        return tuple(TEXT_TASKS)
    from jaxdfl.data.text_datasets import LOADERS

    return tuple(LOADERS)


def check(data_cfg) -> None:
    """Raise :class:`ConfigError` naming ``data.tasks`` unless every task is one ``data.name`` offers (before
    anything slow is loaded)."""
    offered = task_names(data_cfg.name)
    bad = [t for t in data_cfg.tasks if t not in offered]
    if bad:
        raise ConfigError(f"data.tasks: got {list(data_cfg.tasks)}; with name: {data_cfg.name} choose from "
                          f"{sorted(offered)}")


def build(data_cfg, num_devices: int, seed: int, tokenizer=None) -> FederatedData:
    """Build the tasks and split their training examples over ``num_devices`` devices (text tasks are
    tokenized with ``tokenizer``)."""
    check(data_cfg)
    sizes, test_examples = (0, 0), None
    if data_cfg.is_text:
        splits, sizes, test_examples = text_splits(data_cfg, tokenizer)
    elif data_cfg.name == "cifar100":
        from jaxdfl.data.cifar100 import load_cifar100

        splits = [load_cifar100(data_cfg.root)]
    else:
        splits = task_splits(data_cfg.tasks, data_cfg.test_fraction)
    x_pool = np.concatenate([s.x_train for s in splits])
    y_pool = np.concatenate([s.y_train for s in splits])
    task_pool = np.concatenate([np.full(len(s.y_train), t) for t, s in enumerate(splits)])
    k, kind = data_cfg.examples_per_device, data_cfg.partition
    if k > len(y_pool):  # a device would hold every example, some twice: refused before [devices, k] is made
        raise ConfigError(f"data.examples_per_device={k}: more than the {len(y_pool)} training examples of "
                          f"data.name={data_cfg.name}; at most {len(y_pool)}")
    if num_devices > len(y_pool) and not k:
        raise ConfigError(f"num_devices={num_devices}: more devices than the {len(y_pool)} training examples of "
                          f"data.name={data_cfg.name}, so some would get no data; set data.examples_per_device "
                          "to let devices share examples")
    # with examples_per_device = K, the partition rule cuts the pool into as many parts as hold K examples
    # each (a multiple of the tasks for task_per_device), and device i draws K examples of part i mod parts
    owners = num_devices if not k else min(num_devices, max(1, len(y_pool) // k))
    if k and kind == "task_per_device":
        owners = max(len(splits), owners - owners % len(splits))
    parts = _partition(data_cfg, owners, task_pool, y_pool, len(splits), np.random.default_rng([seed, 1]))
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        who = f"device {empty[0]}" if not k else f"part {empty[0]} of {owners} (examples_per_device={k})"
        raise ConfigError(f"num_devices={num_devices}: {who} gets no training data under "
                          f"data.partition={kind!r} ({len(y_pool)} examples in all); use "
                          + ("fewer devices" if not k else "a larger data.examples_per_device")
                          + (" or a larger data.dirichlet_alpha" if kind == "dirichlet" else ""))
    if k:
        index, n = _draw_per_device(parts, num_devices, k, np.random.default_rng([seed, 3]))
    else:
        index, n = _pad_stack([p.astype(np.int32) for p in parts])
    held = np.arange(index.shape[1]) < n[:, None]
    tasks = task_pool[index]
    lowest, highest = np.where(held, tasks, len(splits)).min(1), np.where(held, tasks, -1).max(1)
    task_of_device = np.where(lowest == highest, lowest, -1).astype(np.int32)
    test_x, test_n = _pad_stack([s.x_test for s in splits])
    test_y, _ = _pad_stack([s.y_test for s in splits])
    return FederatedData(x_pool, y_pool, index, n, task_of_device, test_x, test_y, test_n,
                         tuple(s.name for s in splits), tuple(s.chance for s in splits), *sizes,
                         test_examples)


def _draw_per_device(parts: list[np.ndarray], num_devices: int, k: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(index [devices, k], n [devices])``: device i draws k examples of part ``i mod len(parts)``, without
    replacement when the part holds k (devices sharing a part draw independently), else with. One pass per
    part, each over all the devices that share it."""
    owner = np.arange(num_devices) % len(parts)
    index = np.empty((num_devices, k), np.int32)
    for j, part in enumerate(parts):
        mine = np.flatnonzero(owner == j)
        if len(part) >= k:  # the k smallest of one uniform key per (device, example): a sample without replacement
            picks = np.argpartition(rng.random((len(mine), len(part))), k - 1, axis=1)[:, :k]
        else:
            picks = rng.integers(0, len(part), size=(len(mine), k))
        index[mine] = np.sort(part[picks], axis=1)
    return index, np.full(num_devices, k, np.int32)


def _partition(data_cfg, owners: int, task_pool: np.ndarray, y_pool: np.ndarray, num_tasks: int,
               rng: np.random.Generator) -> list[np.ndarray]:
    """The pool's example indices split over ``owners`` by ``data.partition``."""
    kind = data_cfg.partition
    if kind == "task_per_device":
        return partition.task_per_device(task_pool, owners, num_tasks)
    if kind == "iid":
        return partition.iid(len(y_pool), owners, rng)
    if kind == "shards":
        labels = len(np.unique(y_pool))
        if data_cfg.num_shards >= labels:
            warn(f"data.num_shards={data_cfg.num_shards} is not below the {labels} labels: every device sees about "
                 "every label, close to partition: iid")
        return partition.label_shards(y_pool, owners, data_cfg.num_shards, rng)
    return partition.dirichlet(y_pool, owners, data_cfg.dirichlet_alpha, rng)


__all__ = ["FederatedData", "NUM_CLASSES", "TASKS", "TaskSplit", "build", "check", "partition", "pretrain_split",
           "task_names", "task_splits"]
