#!/usr/bin/env bash
# GPU check (issues 5 and 16): training throughput against the length-sorted limit (a bare step
# on length-sorted batches) and the same-batches bare step, for grad_accum 1 (the defaults) and
# pooled grad_accum 2, 4, 8; diverse beam search; bf16 autocast (losses in float32), tokens/s
# and model FLOP utilisation. Under 5 minutes on one H100 or H200.
#
#   bash bench/gpu.sh            # on the GPU machine: PYTHON=<python with CUDA torch> if not .venv
#   bash bench/gpu.sh --tiny     # CPU smoke run with tiny random models (the test suite runs it)
#
# Figures go to stdout and to runs/bench/gpu-*.json (BENCH_OUT to change).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out=${BENCH_OUT:-runs/bench}
case "${1:-}" in
  "") ;;
  --tiny)
    mkdir -p "$out"
    "$python" bench/train_throughput.py --tiny --steps 4 --warmup 2 --grad-accum 2 \
      --json "$out/gpu-train.json"
    "$python" bench/generation_throughput.py --tiny --contexts 2 --beams 2 --batch-size 2 \
      --max-new-tokens 4 --json "$out/gpu-generate.json"
    exit 0 ;;
  *) echo "usage: bash bench/gpu.sh [--tiny]" >&2; exit 2 ;;
esac
mkdir -p "$out"
echo "== training step, bf16 autocast, batch 64 x 128 tokens: length-sorted limit, same-batches"
echo "   bare step, bayespref train at grad_accum 1 (defaults) and pooled 2, 4, 8"
"$python" bench/train_throughput.py --bf16 --steps 40 --warmup 8 --grad-accum 2 4 8 \
  --json "$out/gpu-train.json" optim.batch_size=64 model.max_length=128
echo "== diverse beam search, bf16, K = 4, 64 contexts"
"$python" bench/generation_throughput.py --bf16 --contexts 64 --beams 4 --batch-size 32 \
  --json "$out/gpu-generate.json"
