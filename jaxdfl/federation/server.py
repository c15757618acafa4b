"""Server optimizers on the pseudo-gradient (Reddi et al. 2021, "Adaptive Federated Optimization", Alg. 2):
the clients' average ``x̄`` gives ``g = x − x̄`` for the global model ``x``, and an optax transformation turns g
into the step. FedAvg is SGD with learning rate 1 on g."""

from __future__ import annotations

import jax
import optax


def make_server_optimizer(server_cfg) -> optax.GradientTransformation | None:
    """FedAvgM (SGD with momentum), FedAdam or FedYogi from the ``server_optimizer`` section; None for
    ``none``."""
    name, lr = server_cfg.name, server_cfg.learning_rate
    if name == "none":
        return None
    if name == "fedavgm":
        return optax.sgd(lr, momentum=server_cfg.momentum or None)
    if name == "fedadam":
        return optax.adam(lr, b1=server_cfg.b1, b2=server_cfg.b2, eps=server_cfg.eps)
    return optax.yogi(lr, b1=server_cfg.b1, b2=server_cfg.b2, eps=server_cfg.eps)


def server_step(optimizer: optax.GradientTransformation, state, global_params, averaged):
    """``(new global, optimizer state)``: one step of ``optimizer`` on ``g = global − averaged``."""
    grads = jax.tree.map(lambda x, avg: x - avg, global_params, averaged)
    updates, state = optimizer.update(grads, state, global_params)
    return optax.apply_updates(global_params, updates), state
