"""Byzantine devices: which devices attack, and what they do to the message they send (model poisoning) or
to the labels they train on (data poisoning)."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def byzantine_devices(share: float, num_devices: int, seed: int) -> np.ndarray:
    """``[M]`` bool: a fixed random set of ``round(share · M)`` devices (at least one when ``share`` > 0),
    drawn from the run's seed."""
    count = 0 if share == 0 else max(1, round(share * num_devices))
    chosen = np.random.default_rng([seed, 7]).choice(num_devices, count, replace=False)
    return np.isin(np.arange(num_devices), chosen)


def make_poison(attack_cfg) -> Callable | None:
    """``poison(values, centre, key) -> values`` for ONE attacking device (None for ``none`` and
    ``label_flip``, which poison nothing on the air). ``centre`` is what the device's update is measured from
    (a tree like ``values``, or None: 0)."""
    kind = attack_cfg.kind
    if kind in ("none", "label_flip"):
        return None

    def update_of(values, centre):
        return values if centre is None else jax.tree.map(jnp.subtract, values, centre)

    def sent(update, centre):
        return update if centre is None else jax.tree.map(jnp.add, centre, update)

    if kind == "noise":
        def poison(values, centre, key):
            leaves, treedef = jax.tree.flatten(values)
            keys = jax.random.split(key, len(leaves))
            noise = [attack_cfg.noise_std * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
            return sent(treedef.unflatten(noise), centre)
        return poison

    factor = attack_cfg.factor

    def poison(values, centre, key):
        return sent(jax.tree.map(lambda u: factor * u, update_of(values, centre)), centre)
    return poison


def flip_labels(y: jax.Array, num_classes: int) -> jax.Array:
    """Class c → C − 1 − c (for a multiple-choice task: the choice order reversed)."""
    return num_classes - 1 - y
