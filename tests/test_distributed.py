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


def _one_step_both_ways(tmp_path: Path, common: list[str]) -> tuple[dict, dict]:
    """dist_step.py's tensors from one process at batch 16 and from two at batch 8 each."""
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    step = [str(STEP_SCRIPT), *common]
    _run([sys.executable, *step, "--batch-size", "16", "--output", str(one)])
    assert TORCHRUN is not None
    _run([TORCHRUN, "--nproc_per_node", "2", *step, "--batch-size", "8", "--output", str(two)])
    return load_file(str(one)), load_file(str(two))


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found beside the Python interpreter")
@pytest.mark.parametrize(
    ("normaliser", "accumulation"),
    [("batch", []), ("ema", []), ("batch", ["--grad-accum", "2", "--pool"])],
)
def test_two_processes_match_one_process_on_the_global_batch(
    tmp_path, tiny_encoder_dir, normaliser, accumulation
):
    """The batch normaliser (and the EMA's batch mean) must see the global batch, with the
    gradient reaching every process's share: same per-example losses and the same averaged
    gradients, hence the same update; also with two micro-batches pooled into one forward.
    (On CPU, launch with torchrun: `accelerate launch --cpu` starts a single process.)"""
    common = ["--encoder", tiny_encoder_dir, "--normaliser", normaliser, *accumulation]
    single, parallel = _one_step_both_ways(tmp_path, common)
    assert single.keys() == parallel.keys()
    assert single["losses"].shape == (16 * (2 if accumulation else 1),)
    assert sum(k.startswith("grad.") for k in single) > 10
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found beside the Python interpreter")
def test_a_two_process_training_run_ends_with_a_checkpoint_that_evaluate_reads(
    tmp_path, tiny_encoder_dir
):
    from bayespref.evaluation import evaluate_run

    _run([
        TORCHRUN, "--nproc_per_node", "2", "-m", "bayespref.cli", "train",
        f"output_dir={tmp_path}", "name=ddp", f"model.encoder={tiny_encoder_dir}",
        "model.max_length=32", "data.train={n: 96, seed: 1}", "data.valid={n: 24, seed: 2}",
        "optim.batch_size=8", "optim.max_steps=4", "eval_every=2", "progress=false",
    ])  # fmt: skip
    run = tmp_path / "ddp"
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert sum('"split": "train"' in r for r in rows) == 4  # one writer, no duplicate records
    assert (run / "checkpoint" / "step-00000004" / "manifest.json").is_file()
    result = evaluate_run(str(run))
    assert result["n"] == 24 and 0.0 <= result["model"]["accuracy"] <= 1.0


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found beside the Python interpreter")
def test_two_process_scoring_writes_the_single_process_file(tmp_path, tiny_encoder_dir):
    import json

    from bayespref.config import ModelConfig
    from bayespref.data.schema import LabelSpace
    from bayespref.model import PreferenceModel

    model_dir = tmp_path / "pm"
    space = LabelSpace(("bad", "ok", "good"), (0.0, 0.5, 1.0))
    PreferenceModel.build(ModelConfig(encoder=tiny_encoder_dir, max_length=32), space).save(
        model_dir
    )
    pairs = tmp_path / "pairs.jsonl"
    words = "a b c d e f g h i j k".split()
    pairs.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "context": ["hello"], "response": " ".join(words[: i + 1])})
            + "\n"
            for i in range(7)  # odd: the two shares differ in size
        )
    )
    one, two = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    # --run-dir: under torchrun, `--run` is taken for an abbreviation of torchrun's --run-path
    score = ["score", "--run-dir", str(model_dir), "--input", str(pairs)]
    _run([sys.executable, "-m", "bayespref.cli", *score, "--output", str(one)])
    _run([TORCHRUN, "--nproc_per_node", "2", "-m", "bayespref.cli", *score, "--output", str(two)])
    single = [json.loads(line) for line in one.read_text().splitlines()]
    parallel = [json.loads(line) for line in two.read_text().splitlines()]
    assert [r["id"] for r in parallel] == [r["id"] for r in single] == [f"p{i}" for i in range(7)]
    for a, b in zip(single, parallel):
        assert b["score"] == pytest.approx(a["score"], abs=1e-6)
        assert b["probs"] == pytest.approx(a["probs"], abs=1e-6)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found beside the Python interpreter")
def test_annotator_heads_train_the_same_on_two_processes(tmp_path, tiny_encoder_dir):
    """Per-annotator heads under data parallelism: each process's mean annotator loss, averaged
    by DDP, gives the single process's gradient on the global batch (every slot's output layer
    included, the slots absent from a process's share getting zero there)."""
    common = ["--encoder", tiny_encoder_dir, "--kind", "annotator-heads"]
    single, parallel = _one_step_both_ways(tmp_path, common)
    assert single.keys() == parallel.keys() and "grad.head.out.weight" in single
    assert float(single["grad.head.out.weight"].abs().sum()) > 0
    for key in single:
        torch.testing.assert_close(parallel[key], single[key], rtol=1e-5, atol=1e-6, msg=key)
