"""The local optimizer every device runs, from the ``optimizer`` config section (optax)."""

from __future__ import annotations

import optax


def make_optimizer(opt_cfg) -> optax.GradientTransformation:
    """``sgd`` (with optional momentum), ``adam`` or ``adamw`` at ``opt_cfg.learning_rate``."""
    if opt_cfg.name == "sgd":
        return optax.sgd(opt_cfg.learning_rate, momentum=opt_cfg.momentum or None)
    if opt_cfg.name == "adam":
        return optax.adam(opt_cfg.learning_rate)
    return optax.adamw(opt_cfg.learning_rate, weight_decay=opt_cfg.weight_decay)
