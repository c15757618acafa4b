"""CIFAR-100 (Krizhevsky, 2009) from a local copy of its Python version (``cifar-100-python/``).

The archive ``cifar-100-python.tar.gz`` unpacks to a folder holding the pickled dicts ``train`` (50,000 images)
and ``test`` (10,000): ``b"data"`` ``[n, 3072]`` uint8 (the red, green and blue 32×32 planes, row-major) and
``b"fine_labels"`` (100 classes). Images stay uint8 ``[n, 3, 32, 32]`` (150 MB for the training set); the
model's input pipeline scales and resizes them (:func:`jaxdfl.models.vit.prepare_pixels`).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from jaxdfl.data.digits import TaskSplit
from jaxdfl.errors import ConfigError

NUM_CLASSES = 100


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    try:
        images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"fine_labels"], np.int32)
    except KeyError as err:
        raise ConfigError(f"{path}: not a CIFAR-100 batch (no {err.args[0]!r})") from None
    return images, labels


def load_cifar100(root: str | Path) -> TaskSplit:
    """The train and test sets; ``root`` is the ``cifar-100-python`` folder or the folder that holds it."""
    root = Path(root).expanduser()
    folder = root / "cifar-100-python" if (root / "cifar-100-python").is_dir() else root
    missing = [str(folder / n) for n in ("train", "test") if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"data.root: CIFAR-100 not found, missing {', '.join(missing)} (unpack "
                          "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html there)")
    return TaskSplit("cifar100", *_read(folder / "train"), *_read(folder / "test"))
