"""Scale: rounds of many devices with sparse (neighbour lists) against dense ([M, M]) mixing, side by side.

    python experiments/bench_scale.py                          # writes results/bench_scale.{csv,md}
    python experiments/bench_scale.py --devices 256 1024 --topologies ring
    python experiments/bench_scale.py --memory-only --devices 16384 102400 --topologies ring --chunk 1024 \
        --mix-sizes --set optimizer.name=sgd    # XLA's memory plan of the round program, compiled, not run

Two parts, each measured in this one run:
  * mixing alone: one LoRA-sized message (tiny ViT, r = 4, every adapted layer) mixed by the dense einsum and
    by the neighbour gather, at M devices and neighbour-list widths D; where the gather overtakes the einsum
    sets ``SPARSE_BELOW`` in jaxdfl/sim/build.py (the ``auto`` rule).
  * whole rounds: the tiny ViT with LoRA r = 4, E = 5 local steps, batch 8, 8 examples per device (shared
    from the digits pool), on a ring and an Erdős–Rényi graph of mean degree 8, for each device count and
    each form (dense only up to --dense-max); every case in a fresh process, so its peak memory (ru_maxrss)
    is its own. Reported: time to draw the topology (round 0), compile time, seconds per
    round, device-steps per second and peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from common import case_in_fresh_process, time_rounds, write_rows_csv


def mixing_alone(sizes: list[int], widths: list[int], repeats: int = 3) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdfl import build_simulation, load_config
    from jaxdfl.topology.mixing import mix_tree
    from jaxdfl.topology.neighbours import Neighbours

    sim = build_simulation(load_config(None, ["num_devices=4", "method.rank=4"]))
    one = jax.tree.map(lambda a: a[0], sim.init_fn(jax.random.key(0)).adapter.params)
    rows = []
    for m in sizes:
        tree = jax.tree.map(lambda a: jnp.broadcast_to(a, (m, *a.shape)) + 0.0, one)
        for d in widths:
            if d > m:
                continue
            rng = np.random.default_rng(0)
            index = np.concatenate([np.arange(m)[:, None], rng.integers(0, m, (m, d - 1))], 1).astype(np.int32)
            lists = Neighbours(jnp.asarray(index), jnp.full((m, d), 1.0 / d))
            dense = jnp.zeros((m, m)).at[jnp.arange(m)[:, None], lists.index].add(lists.weight)
            times = {}
            for form, w in (("sparse", lists), ("dense", dense)):
                f = jax.jit(mix_tree)
                jax.block_until_ready(f(w, tree))
                best = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    jax.block_until_ready(f(w, tree))
                    best.append(time.perf_counter() - t)
                times[form] = min(best)
            rows.append({"devices": m, "width": d, "share": d / m, "sparse_ms": 1e3 * times["sparse"],
                         "dense_ms": 1e3 * times["dense"], "dense_over_sparse": times["dense"] / times["sparse"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def case_config(topology: str, devices: int, form: str, chunk: int = 0, extra=()):
    from jaxdfl import load_config

    graph = (["topology.name=ring"] if topology == "ring" else
             ["topology.name=erdos_renyi", f"topology.edge_prob={8 / (devices - 1)}"])
    return load_config(None, [f"num_devices={devices}", "method.rank=4", "local_steps=5", "batch_size=8",
                              "data.partition=iid", "data.examples_per_device=8", f"topology.mixing_form={form}",
                              f"device_chunk={chunk if 0 < chunk < devices else 0}", *graph, *extra])


def memory_plan(topology: str, devices: int, form: str, chunk: int = 0, extra=()) -> dict:
    """What XLA's buffer assignment reserves for one round program (compiled, not run): the state and inputs
    (arguments, the state donated to the output), and the temporaries."""
    import functools

    import jax

    from jaxdfl import build_simulation
    from jaxdfl.sim.round import run_rounds

    cfg = case_config(topology, devices, form, chunk, extra)
    sim = build_simulation(cfg)
    state = jax.eval_shape(sim.init_fn, jax.random.key(0))
    program = jax.jit(functools.partial(run_rounds, sim.round_step), donate_argnums=0)
    plan = program.lower(state, sim.device, sim.inputs(0, 1)).compile().memory_analysis()
    gib = 2.0 ** 30
    return {"topology": topology, "devices": devices, "form": form, "overrides": " ".join(extra), "chunk": chunk,
            "state_gib": sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) / gib,
            "arguments_gib": plan.argument_size_in_bytes / gib, "temporaries_gib": plan.temp_size_in_bytes / gib,
            "total_gib": (plan.argument_size_in_bytes + plan.temp_size_in_bytes) / gib,
            "per_device_kib": (plan.argument_size_in_bytes + plan.temp_size_in_bytes) / devices / 1024}


def one_case(topology: str, devices: int, form: str, rounds: int, chunk: int = 0, extra=()) -> dict:
    import jax

    from jaxdfl import build_simulation
    from jaxdfl.topology import build_topology

    cfg = case_config(topology, devices, form, chunk, extra)
    sim = build_simulation(cfg)
    t = time.perf_counter()  # the topology built and round 0 drawn anew, in the form the rounds use
    fresh = build_topology(cfg.topology, devices, sim.data.n, cfg.seed)
    (fresh.neighbours if sim.sparse_mixing else fresh.mixing)(0)
    draw_s = time.perf_counter() - t
    state = sim.init_fn(jax.random.key(0))
    compile_s, round_s = time_rounds(sim, state, rounds)  # the first round: compiling it, and running it once
    return {"topology": topology, "devices": devices, "form": form, "overrides": " ".join(extra),
            "sparse_used": sim.sparse_mixing,
            "backend": jax.default_backend(),
            "draw_s": draw_s, "compile_s": compile_s, "round_s": round_s,
            "device_steps_per_s": devices * cfg.local_steps / round_s,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # host memory
            "accelerator_peak_mib": ((jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0)) / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[256, 1024, 4096, 16384])
    parser.add_argument("--dense-max", type=int, default=4096, help="no dense runs above this many devices")
    parser.add_argument("--topologies", nargs="+", default=["ring", "erdos_renyi"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="results")
    parser.add_argument("--chunk", type=int, default=0, help="device_chunk for device counts above it")
    parser.add_argument("--mix-sizes", type=int, nargs="*", default=[1024, 4096],
                        help="device counts of the mixing-alone part (none: skip it)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for every whole-round case (e.g. optimizer.name=sgd)")
    parser.add_argument("--memory-only", action="store_true",
                        help="compile each whole-round case and report XLA's memory plan, without running it")
    parser.add_argument("--case", nargs=3, metavar=("TOPOLOGY", "DEVICES", "FORM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case and args.memory_only:
        print(json.dumps(memory_plan(args.case[0], int(args.case[1]), args.case[2], args.chunk, args.overrides)))
        return
    if args.case:
        print(json.dumps(one_case(args.case[0], int(args.case[1]), args.case[2], args.rounds, args.chunk,
                                  args.overrides)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mix_sizes:
        write_rows_csv(out / "bench_mixing.csv", mixing_alone(args.mix_sizes, [3, 9, 17, 33, 65, 129]))
    rows = []
    for topology in args.topologies:
        for devices in args.devices:
            for form in ("sparse", "dense") if devices <= args.dense_max else ("sparse",):
                row, error = case_in_fresh_process(__file__, [
                    "--case", topology, str(devices), form, "--rounds", str(args.rounds), "--chunk", str(args.chunk),
                    *[f"--set={o}" for o in args.overrides], *(["--memory-only"] if args.memory_only else [])])
                if row is None:
                    print(f"{topology} {devices} {form}: failed\n{error}", flush=True)
                    rows.append({"topology": topology, "devices": devices, "form": form, "failed": True})
                    continue
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.memory_only:
        write_rows_csv(out / "bench_scale_memory.csv", rows)
        return
    write_rows_csv(out / "bench_scale.csv", rows)
    lines = ["| topology | devices | form | draw s | compile s | s / round | device-steps/s | peak MiB "
             "| dense/sparse |", "|---|---|---|---|---|---|---|---|---|"]
    by = {(r["topology"], r["devices"], r["form"]): r for r in rows if not r.get("failed")}
    for r in rows:
        if r.get("failed"):
            lines.append(f"| {r['topology']} | {r['devices']} | {r['form']} | failed | | | | | |")
            continue
        dense = by.get((r["topology"], r["devices"], "dense"))
        ratio = f"{dense['round_s'] / r['round_s']:.2f}×" if dense and r["form"] == "sparse" else ""
        lines.append(f"| {r['topology']} | {r['devices']} | {r['form']} | {r['draw_s']:.2f} | {r['compile_s']:.1f} | "
                     f"{r['round_s']:.3f} | {r['device_steps_per_s']:.0f} | {r['peak_mib']:.0f} | {ratio} |")
    (out / "bench_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
