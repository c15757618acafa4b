"""Scale on a real LLM: how many SmolLM2-135M-Instruct devices with LoRA fit in one program, and at what share
of the chip's matmul peak they train (issue 17's GPU target: >= 1,000 devices and >= 40% MFU on an H200).

    python experiments/bench_llm_scale.py --devices 2 4 --batch 2 --dtype float32 --peak-n 2048    # a CPU smoke run
    python experiments/bench_llm_scale.py --devices 64 256 1024 2048 --chunk 128       # a GPU; bench_gpu.sh
    python experiments/bench_llm_scale.py --checkpoint results/smollm2_shape ...          # SmolLM2's shape, random

Every device holds its own LoRA adapter (r = 8 on q, k, v, o, gate, up and down of all 30 layers) and Adam
state over one frozen base stored once; it runs E local steps on batches of B sequences of T tokens (the
generated text tasks, iid, 8 examples per device by reference; T is the longest example, prompt and every
choice packed in one row), then mixes with its two ring neighbours.
Each device count runs in a fresh process (its peak memory its own); one that fails (out of memory) is
reported as such and ends the sweep. Measured per case: build, compile + first round, median round time,
tokens per second, and model FLOP utilisation: the round's FLOPs from XLA's cost analysis (a one-step round
times E, since the analysis counts a scan body once) over the round time, against the chip's peak measured
in the same process (a large matmul in the base's dtype) and, with --peak-tflops, against the spec sheet's.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from common import case_in_fresh_process, time_rounds, write_rows_csv


def case_overrides(devices: int, args) -> list[str]:
    return [f"num_devices={devices}", f"local_steps={args.local_steps}", f"batch_size={args.batch}",
            f"data.max_tokens={args.tokens}", "data.partition=iid", "data.examples_per_device=8",
            "topology.name=ring", "network.name=none", f"model.dtype={args.dtype}", "method.rank=8",
            f"device_chunk={args.chunk if 0 < args.chunk < devices else 0}", f"model.checkpoint={args.checkpoint}",
            *args.overrides]


def matmul_peak(dtype: str, n: int = 8192, repeats: int = 10) -> float:
    """FLOP/s of an n×n by n×n matmul in ``dtype`` on the default device (best of ``repeats``)."""
    import jax
    import jax.numpy as jnp

    a, b = (jax.random.normal(jax.random.key(i), (n, n), jnp.dtype(dtype)) for i in (0, 1))
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def device_step_flops(args) -> float:
    """XLA's FLOP count of one local step of one device (a one-device, one-step round, compiled, not run).

    A round's FLOPs are devices × E × this (the ring mixing adds a negligible few): XLA's cost analysis counts a
    loop's body once, so neither the scan over local steps nor the loop over device chunks can be read off the
    full round program."""
    import jax

    from bench_engine import flops_of
    from jaxdfl import build_simulation, load_config
    from jaxdfl.sim.round import run_rounds

    one = argparse.Namespace(**{**vars(args), "local_steps": 1, "chunk": 0})
    sim = build_simulation(load_config("paper_a/smollm2_quick_lora", case_overrides(1, one)))
    state = jax.eval_shape(sim.init_fn, jax.random.key(0))
    program = jax.jit(lambda s, i: run_rounds(sim.round_step, s, sim.device, i))
    return flops_of(program.lower(state, sim.inputs(0, 1)).compile())


def one_case(devices: int, args) -> dict:
    import jax

    from jaxdfl import build_simulation, load_config

    cfg = load_config("paper_a/smollm2_quick_lora", case_overrides(devices, args))
    t = time.perf_counter()
    sim = build_simulation(cfg)
    state = sim.init_fn(jax.random.key(0))
    build_s = time.perf_counter() - t
    first_s, round_s = time_rounds(sim, state, args.rounds)
    seq = sim.data.pool_x.shape[-1]  # prompt and every choice packed into one row, padded to the longest
    del sim
    flops = devices * cfg.local_steps * device_step_flops(args)
    peak = matmul_peak(args.dtype, n=args.peak_n)
    tokens = devices * cfg.local_steps * cfg.batch_size * seq
    row = {"devices": devices, "checkpoint": args.checkpoint, "backend": jax.default_backend(),
           "device_kind": jax.devices()[0].device_kind,
           "dtype": args.dtype, "tokens_per_seq": seq, "batch": cfg.batch_size,
           "local_steps": cfg.local_steps, "chunk": cfg.device_chunk, "build_s": build_s, "first_round_s": first_s,
           "round_s": round_s, "tokens_per_s": tokens / round_s, "tflop_per_round": flops / 1e12,
           "achieved_tflops": flops / round_s / 1e12, "matmul_peak_tflops": peak / 1e12,
           "mfu_measured_peak": flops / round_s / peak,
           "host_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "accelerator_peak_mib": (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0) / 2 ** 20}
    if args.peak_tflops:
        row["mfu_spec_peak"] = flops / round_s / (args.peak_tflops * 1e12)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[64, 256, 1024, 2048])
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=160,
                        help="data.max_tokens, the cap on a row (the text tasks need 160; rows are padded to 95)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16",
                        help="of the frozen base (and of the matmul that measures the peak)")
    parser.add_argument("--checkpoint", default="smollm2-135m-instruct",
                        help="the base: SmolLM2 itself, or its shape with random weights (smollm2_shape.py)")
    parser.add_argument("--chunk", type=int, default=0, help="device_chunk for device counts above it")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds after the first (median reported)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="the chip's spec-sheet peak in the base's dtype (H200 bf16 dense: 989)")
    parser.add_argument("--peak-n", type=int, default=8192, help="side of the matmul that measures the peak")
    parser.add_argument("--out", default="results")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides for every case")
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(one_case(args.case, args)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for devices in args.devices:
        row, error = case_in_fresh_process(__file__, [*sys.argv[1:], "--case", str(devices)])
        if row is None:
            print(f"{devices} devices: failed\n{error}", flush=True)
            rows.append({"devices": devices, "failed": error.splitlines()[-1][:300]})
            break
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_rows_csv(out / "bench_llm_scale.csv", rows)
    lines = ["| devices | chunk | build s | compile + round 1 s | s / round | tokens/s | TFLOP / round | TFLOP/s "
             "| matmul peak TFLOP/s | MFU (measured peak) | MFU (spec) | accelerator peak GiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['devices']} | failed: {r['failed']} |" + " |" * 10)
            continue
        spec = f"{100 * r['mfu_spec_peak']:.1f}%" if "mfu_spec_peak" in r else "–"
        lines.append(f"| {r['devices']} | {r['chunk']} | {r['build_s']:.1f} | {r['first_round_s']:.1f} | "
                     f"{r['round_s']:.3f} | {r['tokens_per_s']:.0f} | {r['tflop_per_round']:.2f} | "
                     f"{r['achieved_tflops']:.2f} | {r['matmul_peak_tflops']:.1f} | "
                     f"{100 * r['mfu_measured_peak']:.1f}% | {spec} | {r['accelerator_peak_mib'] / 1024:.1f} |")
    (out / "bench_llm_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
