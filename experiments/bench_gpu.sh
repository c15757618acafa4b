#!/usr/bin/env bash
# The benchmarks on a machine with a GPU and JAX for CUDA already installed (jaxdfl need not be: it runs from
# this checkout). Results go to $OUT (default experiments/results/gpu). PARTS picks what runs: topk (the
# selections and the Pallas kernel, 2 × 2 minutes at most), scale (tiny-ViT rounds up to 262,144 devices, 7
# minutes at most; about 8 minutes with topk on one H200) and llm (SmolLM2-135M with LoRA: devices per chip
# and MFU, 7 minutes at most). The llm part runs SmolLM2's real weights where they are installed, else its shape
# with random weights (carry results/smollm2_shape: docs/benchmarks.md, "SmolLM2 at scale").
#
#   OUT=/tmp/gpu bash experiments/bench_gpu.sh                  # topk and scale
#   OUT=/tmp/gpu PARTS=llm bash experiments/bench_gpu.sh        # the LLM sweep alone (one call of its own)
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-results/gpu}
PARTS=" ${PARTS:-topk scale} "
mkdir -p "$OUT"
export PYTHONPATH="$(cd .. && pwd)${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # each case runs in its own process: none may hold the GPU's memory
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee "$OUT/devices.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee -a "$OUT/devices.txt" || true
if [[ $PARTS == *" topk "* ]]; then
# the top-k selections: jaxdfl's bisection and the Pallas kernel (Triton) against lax.top_k, approx_max_k and sorting
timeout 120 python3 bench_topk.py --out "$OUT" 2>&1 | tee "$OUT/bench_topk.log" || echo "bench_topk failed: see its log"
# the same with JAXDFL_TOPK_KERNEL=pallas: jaxdfl's own rows (mask_top_k, kth_largest) then run the kernel
mkdir -p "$OUT/topk_pallas"
JAXDFL_TOPK_KERNEL=pallas timeout 120 python3 bench_topk.py --out "$OUT/topk_pallas" 2>&1 \
    | tee "$OUT/topk_pallas/bench_topk.log" || echo "bench_topk with JAXDFL_TOPK_KERNEL=pallas failed: see its log"
fi
if [[ $PARTS == *" scale "* ]]; then
# whole rounds of the tiny ViT: sparse (neighbour lists) from 4,096 to 262,144 devices, dense up to 16,384. Groups
# of 8,192 devices: one group's activations take about 19 GiB (XLA's plan on CPU: 60.7 GiB for 262,144 devices)
timeout 420 python3 bench_scale.py --devices 4096 16384 65536 131072 262144 --dense-max 16384 --topologies ring \
    --rounds 2 --chunk 8192 --mix-sizes 4096 16384 --out "$OUT" 2>&1 | tee "$OUT/bench_scale.log"
fi
if [[ $PARTS == *" llm "* ]]; then
# SmolLM2-135M-Instruct, LoRA r = 8 on every map, bf16 base: how many devices one chip holds, and the MFU. Its
# real weights where they are installed, else its shape with random weights (same FLOPs) from the config and
# tokenizer carried in results/smollm2_shape (python experiments/smollm2_shape.py tokenizer results/smollm2_shape)
if python3 -c "import gguf, sys; from jaxdfl.models import registry; sys.exit(not registry.locate('smollm2-135m-instruct'))"
then
    base=smollm2-135m-instruct
elif [[ -f ../results/smollm2_shape/config.json ]]; then
    python3 smollm2_shape.py weights ../results/smollm2_shape
    base=../results/smollm2_shape
else
    base=""
    echo "llm: neither SmolLM2's weights nor results/smollm2_shape/config.json are here; skipped"
fi
if [[ -n $base ]]; then
    timeout 420 python3 bench_llm_scale.py --checkpoint "$base" --devices 64 256 1024 2048 4096 --chunk 128 \
        --peak-tflops 989 --out "$OUT" 2>&1 | tee "$OUT/bench_llm_scale.log" || echo "bench_llm_scale stopped: see its log"
fi
fi
