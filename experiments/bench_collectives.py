"""Mixing a ring across chips: shifts with ppermute against the neighbour gather and the dense einsum.

    python experiments/bench_collectives.py                  # 4 emulated chips; results/bench_collectives.md
    python experiments/bench_collectives.py --chips 2 4 8 --devices 4096 --width 2048

The device axis ([M, P] messages, float32) is sharded over C chips (emulated on the CPU with
JAX_NUM_CPU_DEVICES, each case in its own process). For a ring (every device averages itself and its two
neighbours) three programs compute the same mix: jaxdfl's shifts under ``jax.shard_map`` (each chip sends one
boundary row to each neighbour chip by ``lax.ppermute``), the neighbour gather (XLA chooses the collectives),
and the dense einsum with an [M, M] W. Reported: best of 5 times, the largest difference from the gather,
and the collectives in each compiled program with the bytes each moves.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from common import write_rows_csv

COLLECTIVES = ("collective-permute", "all-gather", "all-reduce", "all-to-all", "reduce-scatter")


def collectives(hlo: str) -> dict[str, int]:
    """Bytes each kind of collective produces in a compiled HLO module (summed over its instructions)."""
    sizes = {"f32": 4, "s32": 4, "bf16": 2, "f16": 2, "pred": 1}
    found = {}
    for dtype, dims, op in re.findall(r"= (\w+)\[([\d,]*)\][^ ]* (" + "|".join(COLLECTIVES) + r")\(", hlo):
        count = 1
        for d in filter(None, dims.split(",")):
            count *= int(d)
        found[op] = found.get(op, 0) + count * sizes.get(dtype, 4)
    return found


def one_case(devices: int, width: int) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxdfl.sim.mesh import make_mesh, sharded
    from jaxdfl.topology.circulant import RING_SHIFTS, roll_mix
    from jaxdfl.topology.mixing import mix_dense
    from jaxdfl.topology.neighbours import Neighbours, gather_mix

    mesh = make_mesh(devices)
    put = lambda a: jax.device_put(a, sharded(mesh))  # noqa: E731
    x = put(jax.random.normal(jax.random.key(0), (devices, width)))
    index = put(jnp.asarray((np.arange(devices)[:, None] + np.asarray(RING_SHIFTS)) % devices, jnp.int32))
    weight = put(jnp.full((devices, len(RING_SHIFTS)), 1 / 3))
    dense = put(jnp.zeros((devices, devices)).at[jnp.arange(devices)[:, None], index].add(weight))
    programs = {"shifts + ppermute": (lambda w, i, d, x: roll_mix(RING_SHIFTS, w, x, mesh)),
                "neighbour gather": (lambda w, i, d, x: gather_mix(Neighbours(i, w), x)),
                "dense einsum": (lambda w, i, d, x: mix_dense(d, x))}
    args = (weight, index, dense, x)
    reference = None
    rows = []
    for name, fn in programs.items():
        f = jax.jit(fn)
        hlo = f.lower(*args).compile().as_text()
        result = jax.block_until_ready(f(*args))
        reference = result if reference is None else reference
        times = []
        for _ in range(5):
            t = time.perf_counter()
            jax.block_until_ready(f(*args))
            times.append(time.perf_counter() - t)
        rows.append({"chips": mesh.shape["devices"], "devices": devices, "width": width, "program": name,
                     "ms": 1e3 * min(times), "max_diff": float(jnp.abs(result - reference).max()),
                     "collective_bytes": json.dumps(collectives(hlo))})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chips", type=int, nargs="+", default=[4])
    parser.add_argument("--devices", type=int, default=4096)
    parser.add_argument("--width", type=int, default=2048, help="floats per device message")
    parser.add_argument("--case", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(one_case(args.devices, args.width)))
        return
    rows = []
    for chips in args.chips:
        env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(chips), "JAX_PLATFORMS": "cpu"}
        done = subprocess.run([sys.executable, __file__, "--case", "--devices", str(args.devices), "--width",
                               str(args.width)], env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        rows += json.loads(done.stdout.strip().splitlines()[-1])
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    write_rows_csv(out / "bench_collectives.csv", rows)
    lines = ["| chips | devices × floats | program | ms | max diff | collectives (bytes per program) |",
             "|---:|---|---|---:|---:|---|"]
    lines += [f"| {r['chips']} | {r['devices']} × {r['width']} | {r['program']} | {r['ms']:.1f} | {r['max_diff']:.1e} "
              f"| {r['collective_bytes']} |" for r in rows]
    (out / "bench_collectives.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
