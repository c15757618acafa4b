#!/usr/bin/env bash
# The benchmarks on a machine with a GPU and JAX for CUDA already installed (jaxdfl need not be: it runs from
# this checkout). Results go to $OUT (default experiments/results/gpu). About 8 minutes on one H200 before the
# Pallas top-k rows were added (their two runs below are capped at 2 minutes each).
#
#   OUT=/tmp/gpu bash experiments/bench_gpu.sh
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
export PYTHONPATH="$(cd .. && pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # each case runs in its own process: none may hold the GPU's memory
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee "$OUT/devices.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee -a "$OUT/devices.txt" || true
# the top-k selections: jaxdfl's bisection and the Pallas kernel (Triton) against lax.top_k, approx_max_k and sorting
timeout 120 python3 bench_topk.py --out "$OUT" 2>&1 | tee "$OUT/bench_topk.log" || echo "bench_topk failed: see its log"
# the same with JAXDFL_TOPK_KERNEL=pallas: jaxdfl's own rows (mask_top_k, kth_largest) then run the kernel
mkdir -p "$OUT/topk_pallas"
JAXDFL_TOPK_KERNEL=pallas timeout 120 python3 bench_topk.py --out "$OUT/topk_pallas" 2>&1 \
    | tee "$OUT/topk_pallas/bench_topk.log" || echo "bench_topk with JAXDFL_TOPK_KERNEL=pallas failed: see its log"
# whole rounds of the tiny ViT: sparse (neighbour lists) from 4,096 to 131,072 devices, dense up to 16,384
timeout 420 python3 bench_scale.py --devices 4096 16384 65536 131072 --dense-max 16384 --topologies ring \
    --rounds 3 --chunk 32768 --mix-sizes 4096 16384 --out "$OUT" 2>&1 | tee "$OUT/bench_scale.log"
