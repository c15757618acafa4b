"""The multi-task digits suites: scikit-learn's 8×8 handwritten digits under input transforms and label
functions.

* The *conflicting* suite (``shift``, ``rot90``, ``invert``, ``mirror``): four transforms and four label
  permutations, so tasks differ in *what they see* and *what they must answer*; the pretrained base is near
  chance on every task.
* The *shared-label* suite (``tilt_left``, ``tilt_right``, ``noisy``, ``blurred``): mild input shifts with the
  true digit as the label, on which the pretrained bases are partly competent (0.39–0.63): the regime of
  Paper A, whose base model already half-knows every task (``experiments/paper_a_fair.py``).

Images are float32 in [0, 1], shape ``[n, 8, 8]``; labels are int32 in [0, 10).

The 1797 images are split once (fixed seed) into a *pretraining* part, used only by
``experiments/pretrain_tiny_vit.py`` to train the bundled backbone on plain upright digits with their true
labels, and a *fine-tuning* part from which every task builds its train and test sets. No task but ``plain``
equals the pretraining task: each changes the label function or the input distribution (or both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

PRETRAIN_FRACTION = 0.4
SPLIT_SEED = 20260101
NUM_CLASSES = 10


@dataclass(frozen=True)
class Task:
    """One task: an image transform and a permutation of the 10 digit labels."""

    name: str
    transform: Callable[[np.ndarray], np.ndarray]  # [n, 8, 8] -> [n, 8, 8]
    label_map: np.ndarray  # [10] int: task label of each true digit
    description: str


def _tilt(degrees: float):
    return lambda x: ndimage.rotate(x, degrees, axes=(1, 2), reshape=False, order=1)


def _noisy(x: np.ndarray) -> np.ndarray:
    """Gaussian pixel noise (σ = 0.3, a fixed draw), clipped to [0, 1]."""
    return np.clip(x + 0.3 * np.random.default_rng(SPLIT_SEED).normal(size=x.shape), 0.0, 1.0)


def _perm(fn) -> np.ndarray:
    table = np.array([fn(d) for d in range(NUM_CLASSES)], np.int32)
    assert sorted(table) == list(range(NUM_CLASSES))
    return table


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("plain", lambda x: x, _perm(lambda d: d), "upright digits, true labels (the pretraining task)"),
        Task("shift", lambda x: x, _perm(lambda d: (d + 1) % 10), "upright digits, label = (digit + 1) mod 10"),
        Task("rot90", lambda x: np.rot90(x, 1, axes=(1, 2)), _perm(lambda d: 9 - d),
             "rotated 90°, label = 9 - digit"),
        Task("invert", lambda x: 1.0 - x, _perm(lambda d: (d + 5) % 10), "inverted intensities, label = (digit + 5) mod 10"),
        Task("mirror", lambda x: x[:, :, ::-1], _perm(lambda d: (3 * d) % 10),
             "mirrored left-right, label = 3·digit mod 10"),
        Task("tilt_left", _tilt(25.0), _perm(lambda d: d), "rotated 25° anticlockwise, true labels"),
        Task("tilt_right", _tilt(-25.0), _perm(lambda d: d), "rotated 25° clockwise, true labels"),
        Task("noisy", _noisy, _perm(lambda d: d), "Gaussian pixel noise σ = 0.3, true labels"),
        Task("blurred", lambda x: ndimage.gaussian_filter(x, (0, 1.0, 1.0)), _perm(lambda d: d),
             "Gaussian blur σ = 1 px, true labels"),
    )
}


def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    return images, digits.target.astype(np.int32)


def pretrain_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The images reserved for backbone pretraining: ``(x_train, y_train, x_val, y_val)``, plain labels."""
    images, labels = _load_raw()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    pre = order[: int(PRETRAIN_FRACTION * len(images))]
    n_val = len(pre) // 5
    return images[pre[n_val:]], labels[pre[n_val:]], images[pre[:n_val]], labels[pre[:n_val]]


@dataclass(frozen=True)
class TaskSplit:
    """Train and test arrays of one task (``x`` ``[n, 8, 8]``, ``y`` ``[n]``)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def chance(self) -> float:
        """Accuracy of always answering the most frequent test label."""
        return float(np.bincount(self.y_test, minlength=NUM_CLASSES).max() / len(self.y_test))


def task_splits(task_names, test_fraction: float) -> list[TaskSplit]:
    """Every task sees the same fine-tuning images (transformed its own way) with one train/test cut."""
    images, labels = _load_raw()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    pool = order[int(PRETRAIN_FRACTION * len(images)):]
    n_test = int(round(test_fraction * len(pool)))
    test, train = pool[:n_test], pool[n_test:]
    splits = []
    for name in task_names:
        task = TASKS[name]
        splits.append(TaskSplit(
            name,
            np.ascontiguousarray(task.transform(images[train]), np.float32), task.label_map[labels[train]],
            np.ascontiguousarray(task.transform(images[test]), np.float32), task.label_map[labels[test]],
        ))
    return splits
