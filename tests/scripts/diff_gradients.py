"""Gradients of a tiny study with every kind of design learned at once, written to an .npz: the gradient,
and (with --fd) for each kind a central finite difference of the objective along a random direction in that
kind's parameters, beside the gradient's component along it. Run in a fresh process, so that float64
(JAX_ENABLE_X64) and the number of emulated accelerators (JAX_NUM_CPU_DEVICES) can be chosen."""

import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxdfl

TINY = {"seed": 0, "rounds": 2, "num_devices": 4, "local_steps": 2, "batch_size": 4, "eval_every": 2,
        "model": {"checkpoint": "random", "dim": 8, "depth": 1, "heads": 2, "mlp_dim": 16, "adapt": ["q", "v"]},
        "method": {"name": "lora", "rank": 2}, "topology": {"name": "ring"},
        "network": {"name": "d2d", "radius": 60.0, "bandwidth": 2e4, "power_max": 1e-3},
        "optimizer": {"name": "sgd", "learning_rate": 0.5}}
LEARN = ("mixing", "power", "bandwidth", "positions")


def main(out: str, finite_differences: bool):
    sim = jaxdfl.build_simulation(jaxdfl.load_config(TINY))
    key = jax.random.key(1)
    design, outcome = jaxdfl.diff.outcome(sim, rounds=2, learn=LEARN,
                                          weights={"energy_j": 1.0, "link_entropy": 0.1, "outages": 0.01})
    value = jax.jit(lambda d: outcome(d, key)[0])
    grad = jax.jit(jax.grad(lambda d: outcome(d, key)[0]))(design)
    results = {"value": np.asarray(value(design)), "float64": np.asarray(jnp.zeros(()).dtype == jnp.float64),
               "devices": np.asarray(jax.device_count())}
    results |= {f"grad/{k}": np.asarray(g) for k, g in grad.items()}
    if finite_differences:
        eps = 1e-5
        for i, kind in enumerate(LEARN):
            direction = jax.random.normal(jax.random.key(i + 7), design[kind].shape, design[kind].dtype)
            shifted = lambda s: design | {kind: design[kind] + s * direction}  # noqa: E731
            results[f"fd/{kind}"] = np.asarray((value(shifted(eps)) - value(shifted(-eps))) / (2 * eps))
            results[f"along/{kind}"] = np.asarray(jnp.vdot(grad[kind], direction))
    np.savez(out, **results)


if __name__ == "__main__":
    main(sys.argv[1], "--fd" in sys.argv)
