"""The benchmark scripts run end to end on the CPU with tiny models (their figures are not
asserted: speed is measured by running them, not by tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tiny_lm import save_tiny_llama

REPO = Path(__file__).resolve().parents[1]


def test_gpu_script_runs_on_cpu_with_tiny_models(tmp_path, tiny_encoder_dir):
    generator = save_tiny_llama(tmp_path / "tiny-llm")
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        TINY_ENCODER=tiny_encoder_dir,
        TINY_GENERATOR=str(generator),
        BENCH_OUT=str(tmp_path / "out"),
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        ["bash", "bench/gpu.sh", "--tiny"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    train = json.loads((tmp_path / "out" / "gpu-train.json").read_text())
    generate = json.loads((tmp_path / "out" / "gpu-generate.json").read_text())
    assert train["bare tokens/s"] > 0 and train["ours, default chunks: tokens/s"] > 0
    assert generate["generated tokens/s"] > 0
    assert "ratio to bare" in proc.stdout and "generated tokens/s" in proc.stdout
