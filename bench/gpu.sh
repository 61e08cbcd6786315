#!/usr/bin/env bash
# GPU check (issue 5): training throughput and diverse beam search with bf16 autocast (losses in
# float32), tokens/s and model FLOP utilisation. Under 5 minutes on one H100 or H200.
#
#   bash bench/gpu.sh            # on the GPU machine: PYTHON=<python with CUDA torch> if not .venv
#   bash bench/gpu.sh --tiny     # CPU smoke run with tiny random models (the test suite runs it)
#
# Figures go to stdout and to runs/bench/gpu-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
out=${BENCH_OUT:-runs/bench}
mkdir -p "$out"
if [[ "${1:-}" == "--tiny" ]]; then
  encoder=${TINY_ENCODER:?set TINY_ENCODER to a tiny encoder folder (config, weights, tokenizer)}
  "$python" bench/train_throughput.py --config configs/synthetic.yaml --steps 2 --warmup 1 \
    --json "$out/gpu-train.json" model.encoder="$encoder" "data.train={n: 64, seed: 1}" \
    model.max_length=32 optim.batch_size=8
  generator=${TINY_GENERATOR:?set TINY_GENERATOR to a tiny causal LM folder with a chat tokenizer}
  "$python" bench/generation_throughput.py --model "$generator" --contexts 2 --beams 2 --batch-size 2 \
    --max-new-tokens 4 --json "$out/gpu-generate.json"
  exit 0
fi
echo "== training step, bf16 autocast, batch 64 x 128 tokens"
"$python" bench/train_throughput.py --bf16 --steps 40 --warmup 5 --json "$out/gpu-train.json" \
  optim.batch_size=64 model.max_length=128
echo "== diverse beam search, bf16, K = 4, 64 contexts"
"$python" bench/generation_throughput.py --bf16 --contexts 64 --beams 4 --batch-size 32 \
  --json "$out/gpu-generate.json"
