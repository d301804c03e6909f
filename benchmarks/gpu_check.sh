#!/usr/bin/env bash
# The project's GPU check (issue #18): full-size models with random weights built on the GPU, no
# downloads, one H200 in about 4 minutes. For each model, `videoprune bench speed` runs the
# transformers default pipeline and the fast one (preprocessing on the GPU, vision attention in one
# call per block), each with its own unpruned baseline, on 128 noise frames of 272x640 (decoding
# excluded), and writes OUT/<model>.json (full report), .png and .txt (the printed table).
#
#   bash benchmarks/gpu_check.sh                       # on a CUDA machine: writes benchmarks/results/gpu/
#   OUT=/tmp/check DEVICE=cpu DTYPE=float32 SCALE=0.0625 FRAMES=8 bash benchmarks/gpu_check.sh   # CPU smoke run
#
# Needs videoprune importable by $PYTHON (PYTHONPATH=src or an install) with transformers >= 5.23.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
SCALE=${SCALE:-1}
FRAMES=${FRAMES:-128}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
"$PYTHON" -c 'import torch, transformers
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
print(f"torch {torch.__version__}, transformers {transformers.__version__}, {gpu}")' | tee "$OUT/versions.txt"

run() {  # run NAME ARGS...: one bench speed run, table to NAME.txt, full report to NAME.json
    local name=$1
    shift
    "$PYTHON" -m videoprune.cli bench speed --device "$DEVICE" --dtype "$DTYPE" --scale "$SCALE" --frames "$FRAMES" \
        --video random --max-pixels 200704 --repeats 3 --warmup 1 --decode-tokens 2 --pipeline default,fast \
        --out "$OUT/$name" "$@" | tee "$OUT/$name.txt"
}

# 272x640 frames at --max-pixels 200704: 20x46 patches = 230 LLM tokens per temporal slice
run qwen2.5-vl-7b --model qwen2.5-vl-7b --method evs,evs-pre --rates 0.75
run molmo2-8b --model molmo2-8b --method stts --rates 0.5
run qwen3-vl-8b --model qwen3-vl-8b --method evs --rates 0.75
echo "gpu_check: wrote $OUT"
