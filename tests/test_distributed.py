"""Data parallelism: 2 CPU processes (gloo) with batch 8 each equal 1 process with batch 16."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

STEP_SCRIPT = Path(__file__).with_name("dist_step.py")
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which(
    "torchrun"
)


def _run(cmd: list[str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found beside the Python interpreter")
@pytest.mark.parametrize("normaliser", ["batch", "ema"])
def test_two_processes_match_one_process_on_the_global_batch(
    tmp_path, tiny_encoder_dir, normaliser
):
    """The batch normaliser (and the EMA's batch mean) must see the global batch, with the
    gradient reaching every process's share: same per-example losses and the same averaged
    gradients, hence the same update. (On CPU, launch with torchrun: `accelerate launch --cpu`
    starts a single process.)"""
    common = ["--encoder", tiny_encoder_dir, "--normaliser", normaliser]
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    _run([sys.executable, str(STEP_SCRIPT), *common, "--batch-size", "16", "--output", str(one)])
    _run(
        [
            TORCHRUN,
            "--nproc_per_node",
            "2",
            str(STEP_SCRIPT),
            *common,
            "--batch-size",
            "8",
            "--output",
            str(two),
        ]
    )
    single, parallel = load_file(str(one)), load_file(str(two))
    assert single.keys() == parallel.keys()
    assert single["losses"].shape == (16,)
    assert sum(k.startswith("grad.") for k in single) > 10
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], rtol=1e-5, atol=1e-6, msg=key)
