"""Memory of a differentiated rollout against its length: with each round under ``jax.checkpoint`` (the
default) the backward pass keeps one round's activations plus each round's carried state; without it, every
round's activations.

    python experiments/diff_memory.py          # the quick start (8 devices), R = 10 and 50, with and without

Reports XLA's own accounting of the compiled gradient program (temporary buffers; arguments and outputs
are the same in every case), read with ``compiled.memory_analysis()``.
"""

from __future__ import annotations

import argparse
import time

import jax

import jaxdfl


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--rounds", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
    sim = jaxdfl.build_simulation(jaxdfl.load_config(args.config))
    print(f"{args.config}: {sim.config.num_devices} devices, {sim.config.local_steps} local steps of batch "
          f"{sim.config.batch_size}; learning the mixing matrix")
    print(f"{'rounds':>6} {'checkpointed':>12} {'temp MiB':>9} {'compile s':>9}")
    for rounds in args.rounds:
        for remat in (True, False):
            design, outcome = jaxdfl.diff.outcome(sim, rounds=rounds, learn=("mixing",), remat=remat)
            t = time.time()
            compiled = jax.jit(jax.grad(lambda d: outcome(d, jax.random.key(0))[0])).lower(design).compile()
            memory = compiled.memory_analysis()
            print(f"{rounds:>6} {str(remat):>12} {memory.temp_size_in_bytes / 2**20:>9.1f} {time.time() - t:>9.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
