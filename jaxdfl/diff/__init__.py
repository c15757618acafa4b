"""Differentiable studies: gradients of what devices learn, through whole simulations, with respect to the
topology, the devices' placement, their transmit power and their bandwidth.

    sim = jaxdfl.build_simulation(jaxdfl.load_config("quickstart"))
    design, outcome = jaxdfl.diff.outcome(sim, rounds=10, learn=("mixing",))
    value, aux = outcome(design, key)
    grads = jax.grad(lambda d: outcome(d, key)[0])(design)

A(n) is equation n of Paper A (sparse-and-orthogonal LoRA for decentralized multi-task fine-tuning), B(n) of
Paper B (SOFT and TSFA for wireless federated LoRA).
"""

from jaxdfl.diff.design import LEARNABLE, link_entropy, masked_softmax, mixing_matrix, sinkhorn, transmit_power
from jaxdfl.diff.rollout import COSTS, Validation, outcome, split_validation, validation_scores

__all__ = ["COSTS", "LEARNABLE", "Validation", "link_entropy", "masked_softmax", "mixing_matrix", "outcome",
           "sinkhorn", "split_validation", "transmit_power", "validation_scores"]
