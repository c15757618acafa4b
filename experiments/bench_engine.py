"""Benchmark the vmapped round engine against a Python loop over devices.

    python experiments/bench_engine.py                     # 8, 64, 256 devices; writes results/bench_engine.csv
    python experiments/bench_engine.py --devices 8 64 --rounds 5

Both sides run the same work per round: every device does E local optimizer steps (the same
``make_local_train`` function), then the round's mixing matrix is applied and merged.
  * vmapped: jaxdfl's rounds as one jitted program (``Simulation.run_rounds``, a scan over rounds).
  * loop:    one jitted one-device training call per device from Python, then a jitted stack + mix + merge:
             how FedJAX's default ``for_each_client`` backend and Flower-style simulators run clients.
Achieved FLOP/s uses XLA's cost analysis of the compiled programs; the peak is this machine's own float32
matmul rate (2048×2048 @ 2048×2048) measured in the same run.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdfl.config import load_config
from jaxdfl.core import RoundControl
from jaxdfl.sim.build import build_simulation
from jaxdfl.sim.local import make_local_train
from jaxdfl.sim.optimizer import make_optimizer
from jaxdfl.sim.round import make_round_step, run_rounds
from jaxdfl.topology import mix


def flops_of(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Float32 FLOP/s of a large square matmul on the default device (best of ``repeats``)."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = min(_timed(lambda: f(a, b).block_until_ready()) for _ in range(repeats))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def round_flops(sim) -> float:
    """FLOPs of one round. XLA's cost analysis counts a scan body once, whatever its trip count, so count a
    one-step round and multiply by E (the mixing after training is a negligible extra)."""
    cfg = sim.config
    one_step = make_round_step(sim.objective, sim.method, make_optimizer(cfg.optimizer), local_steps=1,
                               batch_size=cfg.batch_size, collision=True)
    state = sim.init_fn(jax.random.key(0))
    lowered = jax.jit(lambda s, i: run_rounds(one_step, s, sim.device, i)).lower(state, sim.inputs(0, 1))
    return cfg.local_steps * flops_of(lowered.compile())


def bench(num_devices: int, rounds: int, batch: int, local_steps: int, model_overrides=()) -> dict:
    cfg = load_config(None, [f"num_devices={num_devices}", f"batch_size={batch}", f"local_steps={local_steps}",
                             "topology.name=kregular", "topology.degree=4", *model_overrides])
    sim = build_simulation(cfg)
    w = jnp.asarray(sim.topology.mixing(0))
    keys = [jax.random.key(r) for r in range(rounds + 1)]
    flops = round_flops(sim)

    # --- vmapped: the rounds as one program (compiled and run once before timing)
    state = sim.init_fn(jax.random.key(0))
    inputs = sim.inputs(0, rounds)
    state, m = sim.run_rounds(state, inputs)
    jax.block_until_ready(state)
    t = time.perf_counter()
    state, m = sim.run_rounds(state, inputs)
    jax.block_until_ready(state)
    vmapped_s = (time.perf_counter() - t) / rounds

    # --- loop: the same one-device training, called once per device from Python
    optimizer = make_optimizer(cfg.optimizer)
    train = jax.jit(make_local_train(sim.objective.loss, sim.method, optimizer, local_steps, batch, False))
    method = sim.method

    @jax.jit
    def exchange(adapters, ref_params, w, key):
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *adapters)
        message, stacked = jax.vmap(method.encode, in_axes=(0, 0, 0, None))(
            stacked, ref_params, jax.random.split(key, len(adapters)), RoundControl())
        return jax.vmap(method.merge, in_axes=(0, 0, None))(stacked, mix(w, message), RoundControl())

    index, n = np.asarray(sim.device.index), np.asarray(sim.device.n)  # each device's rows of the shared pool
    per_device = [(sim.device.x, sim.device.y, jnp.asarray(index[i]), jnp.asarray(n[i])) for i in range(num_devices)]
    state = sim.init_fn(jax.random.key(0))
    adapters = [jax.tree.map(lambda a, i=i: a[i], state.adapter) for i in range(num_devices)]
    opts = [jax.tree.map(lambda a, i=i: a[i], state.opt_state) for i in range(num_devices)]

    def loop_round(adapters, opts, key):
        dev_keys = jax.random.split(key, num_devices)
        out = [train(a, o, sim.base, *d, k) for a, o, d, k in zip(adapters, opts, per_device, dev_keys)]
        ref = jax.tree.map(lambda *xs: jnp.stack(xs), *[a.params for a in adapters])
        merged = exchange([o[0] for o in out], ref, w, key)
        new_adapters = [jax.tree.map(lambda a, i=i: a[i], merged) for i in range(num_devices)]
        return new_adapters, [o[1] for o in out]

    adapters, opts = loop_round(adapters, opts, keys[0])
    jax.block_until_ready(adapters)
    t = time.perf_counter()
    for r in range(min(rounds, 3)):
        adapters, opts = loop_round(adapters, opts, keys[r + 1])
    jax.block_until_ready(adapters)
    loop_s = (time.perf_counter() - t) / min(rounds, 3)

    steps = num_devices * local_steps
    return {"devices": num_devices, "model_dim": sim.model.spec.dim, "batch": batch, "local_steps": local_steps,
            "vmapped_rounds_per_s": 1 / vmapped_s, "loop_rounds_per_s": 1 / loop_s,
            "vmapped_device_steps_per_s": steps / vmapped_s, "loop_device_steps_per_s": steps / loop_s,
            "speedup": loop_s / vmapped_s, "round_gflop": flops / 1e9,
            "vmapped_gflops": flops / vmapped_s / 1e9, "loop_gflops": flops / loop_s / 1e9}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--local-steps", type=int, default=5)
    parser.add_argument("--wide-dim", type=int, default=256,
                        help="also run the largest device count with a random model this wide (0: skip)")
    parser.add_argument("--out", default="results/bench_engine.csv")
    args = parser.parse_args()

    peak = matmul_peak()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, backend "
          f"{jax.default_backend()} ({jax.devices()[0].device_kind}); float32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    rows = []
    header = (f"{'devices':>7} {'dim':>4} {'vmapped rnd/s':>13} {'loop rnd/s':>10} {'vmapped dev-steps/s':>19} "
              f"{'loop dev-steps/s':>16} {'speedup':>7} {'GFLOP/rnd':>9} {'vmapped GFLOP/s':>15} {'% of peak':>9} "
              f"{'loop % of peak':>14}")
    print(header)
    wide = ["model.checkpoint=random", f"model.dim={args.wide_dim}", f"model.mlp_dim={4 * args.wide_dim}"]
    runs = [(m, ()) for m in args.devices] + ([(max(args.devices), wide)] if args.wide_dim else [])
    for m, model_overrides in runs:
        row = bench(m, args.rounds, args.batch, args.local_steps, model_overrides)
        row["vmapped_pct_peak"] = 100 * row["vmapped_gflops"] * 1e9 / peak
        row["loop_pct_peak"] = 100 * row["loop_gflops"] * 1e9 / peak
        row["peak_gflops"] = peak / 1e9
        rows.append(row)
        print(f"{m:>7} {row['model_dim']:>4} {row['vmapped_rounds_per_s']:>13.2f} {row['loop_rounds_per_s']:>10.2f} "
              f"{row['vmapped_device_steps_per_s']:>19.0f} {row['loop_device_steps_per_s']:>16.0f} "
              f"{row['speedup']:>6.1f}x {row['round_gflop']:>9.2f} {row['vmapped_gflops']:>15.1f} "
              f"{row['vmapped_pct_peak']:>8.1f}% {row['loop_pct_peak']:>13.1f}%", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
