"""The top-k selections on jaxdfl's hot paths against what a user would write instead, side by side.

    python experiments/bench_topk.py              # writes results/bench_topk.{csv,md}; any backend

Three selections, each on the shapes it meets in jaxdfl, each candidate jitted, best of 5 after a warm-up:
  * whole-array mask (so_lora/LoRI's top-|B| mask, TLoRA over a layer): B of a 4,096-wide layer at r = 16,
    keep 10%;
  * per-row masks (SOFT, TLoRA, RLoRA: each rank component keeps its own count): 16 rows of 8,192, a
    different k per row;
  * k-th largest per row (implicit-MoE inference, A(29)): 200,000 token rows of 128 expert components, k = 8.
Candidates: jaxdfl's selections (``mask_top_k``, ``kth_largest``: the bisection on CPU, sorting or
``lax.top_k`` elsewhere, or the Pallas kernel there with ``JAXDFL_TOPK_KERNEL=pallas``), the bisection alone,
the double argsort jaxdfl used before, ``lax.top_k`` (static k) plus a scatter into a mask, and
``lax.approx_max_k`` (plus a scatter for masks; not exact on TPU: reported with the share of entries it gets
wrong), and the Pallas kernel (``jaxdfl.sparse.topk_kernel``) called directly. Masks are checked equal to the
double argsort. The Pallas kernel is timed on GPU and TPU only; on CPU it runs in interpret mode, checked for
exactness and not timed (interpret-mode timings say nothing about the kernel). A candidate that fails (say,
a lowering error) is reported as such and the others go on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from common import write_rows_csv

from jaxdfl.sparse.topk import (_bisect, _mask_by_bisection, descending_rank, kth_largest,  # noqa: E402
                                 mask_top_k)
from jaxdfl.sparse import topk  # noqa: E402
from jaxdfl.sparse.topk_kernel import kth_largest_pallas, mask_top_k_pallas  # noqa: E402

INTERPRET = jax.default_backend() == "cpu"  # Pallas runs interpreted there: checked, not timed


def best_ms(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def scatter_mask(shape, index):
    """A bool mask of ``shape`` ``[..., n]`` with ``index`` ``[..., k]`` set."""
    flat = jnp.zeros(shape, bool)
    return jnp.put_along_axis(flat, index, True, axis=-1, inplace=False)


def whole_array(rows: list[dict]):
    a = jnp.abs(jax.random.normal(jax.random.key(0), (4096 * 16,)))
    k = a.size // 10
    reference = np.asarray(descending_rank(a) < k)
    candidates = {
        "jaxdfl mask_top_k (k traced)": jax.jit(mask_top_k),
        "bisection (k traced)": jax.jit(_mask_by_bisection),
        "double argsort (k traced)": jax.jit(lambda a, k: descending_rank(a) < k),
        "lax.top_k + scatter (k static)": jax.jit(lambda a, k: scatter_mask(a.shape, jax.lax.top_k(a, k)[1]),
                                                  static_argnums=1),
        "lax.approx_max_k + scatter (k static)": jax.jit(
            lambda a, k: scatter_mask(a.shape, jax.lax.approx_max_k(a, k)[1]), static_argnums=1),
        **_pallas(mask_top_k_pallas, "(k traced)"),
    }
    _measure(rows, "whole-array mask [65536], k = 10%", candidates, (a, k), reference)


def per_row(rows: list[dict]):
    a = jnp.abs(jax.random.normal(jax.random.key(1), (16, 8192)))
    k = jnp.asarray(np.random.default_rng(0).integers(100, 1600, size=(16, 1)), jnp.int32)
    k_max = int(k.max())
    reference = np.asarray(descending_rank(a) < k)

    def top_k_then_cut(a, k):  # the k_max largest per row (in order), of which row i keeps its first k[i]
        _, index = jax.lax.top_k(a, k_max)
        rows = jnp.arange(a.shape[0])[:, None]
        return jnp.zeros(a.shape, bool).at[rows, index].set(jnp.arange(k_max) < k)

    candidates = {
        "jaxdfl mask_top_k (k traced)": jax.jit(mask_top_k),
        "bisection (k traced)": jax.jit(_mask_by_bisection),
        "double argsort (k traced)": jax.jit(lambda a, k: descending_rank(a) < k),
        "lax.top_k(k_max) + scatter + cut": jax.jit(top_k_then_cut),
        **_pallas(mask_top_k_pallas, "(k traced)"),
    }
    _measure(rows, "per-row masks [16, 8192], k from 100 to 1600", candidates, (a, k), reference)


def kth(rows: list[dict]):
    a = jnp.abs(jax.random.normal(jax.random.key(2), (200_000, 128)))
    reference = np.asarray(jax.lax.top_k(a, 8)[0][:, -1:])
    candidates = {
        "jaxdfl kth_largest": jax.jit(lambda a: kth_largest(a, 8)),
        "bisection": jax.jit(lambda a: _bisect(a, 8)),
        "lax.top_k(8)[-1]": jax.jit(lambda a: jax.lax.top_k(a, 8)[0][:, -1:]),
        "sort, then [-8]": jax.jit(lambda a: jnp.sort(a, axis=-1)[:, -8:-7]),
        "lax.approx_max_k(8)[-1]": jax.jit(lambda a: jax.lax.approx_max_k(a, 8)[0][:, -1:]),
        **_pallas(lambda a, **kw: kth_largest_pallas(a, 8, **kw), "", check_rows=2048),
    }
    _measure(rows, "k-th largest [200000, 128], k = 8", candidates, (a,), reference)


def _pallas(fn, note: str, check_rows: int | None = None) -> dict:
    """The Pallas kernel as a candidate: jitted on GPU/TPU; on CPU in interpret mode (marked: not timed), on
    the first ``check_rows`` rows only if given (interpreting all 200,000 rows of the k-th case takes 5 min)."""
    if not INTERPRET:
        return {" ".join(["Pallas kernel", note]).strip(): jax.jit(fn)}
    name = " ".join(["Pallas kernel", note]).strip() + ", interpret mode"
    name += f" on the first {check_rows} rows" if check_rows else ""
    return {name: jax.jit(lambda a, *rest: fn(a[:check_rows], *rest, interpret=True))}


def _measure(rows, case, candidates, args, reference):
    base = None
    for name, fn in candidates.items():
        try:
            out = np.asarray(fn(*args))
        except Exception as error:  # one failing candidate (say, a lowering error) must not end the run
            _report(rows, case, name, error=f"{type(error).__name__}: {error}"[:300])
            continue
        wrong = float(np.mean(out != reference[:out.shape[0]]))  # a check on fewer rows: against those
        if "interpret mode" in name:  # correctness only: interpret-mode timings are meaningless
            _report(rows, case, name, wrong=wrong)
            continue
        ms = best_ms(fn, *args)
        base = base or ms
        _report(rows, case, name, ms, ms / base, wrong)


def _report(rows, case, name, ms=float("nan"), speedup=float("nan"), wrong=float("nan"), error=""):
    """Appends one result row and prints it; ``ms`` NaN for a candidate not timed, ``error`` for one that failed."""
    error = error.replace("\n", " ").replace("|", "/")  # one line, and no table cell break
    rows.append({"case": case, "candidate": name, "ms": ms, "speedup_vs_first": speedup, "wrong_share": wrong,
                 "error": error})
    status = f"FAILED: {error}" if error else f"{ms:9.2f} ms" if ms == ms else "(not timed)"
    print(f"{case:48s} {name:40s} {status}  wrong {wrong:.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="results")
    args = parser.parse_args()
    print(f"backend: {jax.default_backend()}, {jax.devices()[0].device_kind}, top-k kernel setting: "
          f"{topk.KERNEL}" + (" (the Pallas rows run in interpret mode: checked, not timed)" if INTERPRET else ""))
    rows: list[dict] = []
    whole_array(rows)
    per_row(rows)
    kth(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_rows_csv(out / "bench_topk.csv", rows)
    lines = ["| case | candidate | ms | × jaxdfl's time | entries wrong | error |", "|---|---|---:|---:|---:|---|"]
    lines += [f"| {r['case']} | {r['candidate']} | {r['ms']:.2f} | {r['speedup_vs_first']:.2f} | "
              f"{r['wrong_share']:.4f} | {r['error']} |" for r in rows]
    (out / "bench_topk.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
