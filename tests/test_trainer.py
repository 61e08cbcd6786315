"""Both recipes run on the one trainer core (bayespref.trainer): the same failure policy, the
same checkpoints and the same exact resume, shown once per recipe through the shared code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from bayespref.calibration import CalibrationConfig, calibrate
from bayespref.checkpoint import CheckpointError, latest_checkpoint, verify_manifest
from bayespref.config import load_config, load_yaml, save_config
from bayespref.train import train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


class Recipe:
    """One recipe as the tests drive it: its config, its entry point, its final weights."""

    def __init__(self, name: str, tmp_path: Path, tiny_encoder_dir, char_generator_dir, pm_run):
        self.name = name
        self.tmp_path = tmp_path
        self.encoder = tiny_encoder_dir
        self.generator = char_generator_dir
        self.pm = pm_run

    def config(self, run: str, *overrides: str):
        common = [f"output_dir={self.tmp_path / 'runs'}", f"name={run}", "progress=false"]
        if self.name == "preference":
            return load_config(
                None,
                [
                    *common,
                    f"model.encoder={self.encoder}",
                    "model.max_length=32",
                    "model.dropout=0.2",  # the RNG state must carry over a resume
                    "data.train={n: 64, seed: 1}",
                    "data.valid={n: 16, seed: 2}",
                    "optim.batch_size=8",
                    "optim.max_steps=12",
                    "eval_every=2",
                    "save_every=2",
                    "keep_last=3",
                    *overrides,
                ],
            )
        return load_yaml(
            CalibrationConfig,
            None,
            [
                *common,
                f"generator.name={self.generator}",
                "generator.max_context_tokens=40",
                "generator.max_target_tokens=12",
                "data.n=14",
                "data.n_eval=2",
                f"scorer.run={self.pm}",
                "decoding.num_beams=4",
                "decoding.num_beam_groups=2",
                "decoding.max_new_tokens=6",
                "decoding.min_new_tokens=2",
                "decoding.batch_size=4",
                # each run searches its own candidates (<run>/candidates.jsonl): loading the
                # scorer draws from the RNG, so a reused cache would change the LoRA init
                "optim.batch_size=2",
                "optim.grad_accum=2",
                "optim.max_steps=12",
                "optim.lr=1e-3",
                "peft.method=lora",  # LoRA dropout: the RNG state must carry over a resume
                "peft.dropout=0.2",
                "eval_every=2",
                "save_every=2",
                "keep_last=3",
                *overrides,
            ],
        )

    def run(self, config, resume: bool = False):
        return (train if self.name == "preference" else calibrate)(config, resume=resume)

    @property
    def command(self) -> str:
        return "train" if self.name == "preference" else "calibrate"

    def weights_file(self, run_dir: Path) -> Path:
        """The trained weights of the newest checkpoint (the same format for every step)."""
        folder = latest_checkpoint(run_dir / "checkpoint")
        assert folder is not None
        if self.name == "preference":
            return folder / "model" / "model.safetensors"
        return folder / "trainable.safetensors"

    def weights(self, run_dir: Path) -> tuple[str, dict]:
        """``(checkpoint folder name, tensors)`` of the newest checkpoint."""
        path = self.weights_file(run_dir)
        step = path.parents[1] if self.name == "preference" else path.parent
        return step.name, load_file(str(path))


@pytest.fixture(params=["preference", "calibration"])
def recipe(request, tmp_path, tiny_encoder_dir, char_generator_dir, pm_run) -> Recipe:
    return Recipe(request.param, tmp_path, tiny_encoder_dir, char_generator_dir, pm_run)


def assert_same_weights(a: tuple[str, dict], b: tuple[str, dict]) -> None:
    assert a[0] == b[0]  # the same final step
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        torch.testing.assert_close(b[1][key], a[1][key], rtol=1e-5, atol=1e-6)


def train_records(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return [r for r in rows if r["split"] == "train"]


def test_non_finite_steps_are_skipped_and_counted(recipe, monkeypatch):
    """on_nonfinite=skip: the poisoned step is not applied, recorded with its item ids, and
    counted; training goes on to the last step with finite weights."""
    real_backward = Accelerator.backward
    calls = {"n": 0}
    poisoned_call = 5  # PM: step 5 (one backward per step); calibration: step 2 (4 per step)

    def backward(self, loss, **kwargs):
        calls["n"] += 1
        if calls["n"] == poisoned_call:
            loss = loss * float("nan")
        return real_backward(self, loss, **kwargs)

    monkeypatch.setattr(Accelerator, "backward", backward)
    config = recipe.config("skip", "on_nonfinite=skip")
    result = recipe.run(config)
    assert result.steps == 12
    step = 5 if recipe.name == "preference" else 2
    record = json.loads((config.run_dir / "nonfinite.jsonl").read_text())
    assert record["step"] == step
    assert len(record["ids"]) == (8 if recipe.name == "preference" else 4)  # the whole step
    state = json.loads(
        (latest_checkpoint(config.run_dir / "checkpoint") / "trainer_state.json").read_text()
    )
    assert state["trainer"]["skipped_steps"] == 1
    _, weights = recipe.weights(config.run_dir)
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert [r["step"] for r in train_records(config.run_dir)] == list(range(1, 13))


def test_non_finite_stop_keeps_the_last_good_checkpoint(recipe, monkeypatch):
    from bayespref.safety import NonFiniteError

    real_backward = Accelerator.backward

    def backward(self, loss, **kwargs):
        return real_backward(self, loss * float("nan"), **kwargs)

    monkeypatch.setattr(Accelerator, "backward", backward)
    config = recipe.config("stop")
    with pytest.raises(NonFiniteError, match="step 1 .*not applied.*on_nonfinite=skip"):
        recipe.run(config)
    assert (config.run_dir / "nonfinite.jsonl").is_file()


def test_a_failed_save_keeps_the_previous_checkpoint_and_resume_matches(recipe, monkeypatch):
    from bayespref import checkpoint as checkpoint_module

    reference = recipe.config("reference")
    recipe.run(reference)

    config = recipe.config("disk-full")
    real_save = checkpoint_module.save_optimizer
    calls = {"n": 0}

    def disk_full_on_second_save(optimizer, folder):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real_save(optimizer, folder)

    monkeypatch.setattr("bayespref.trainer.save_optimizer", disk_full_on_second_save)
    with pytest.raises(CheckpointError, match="No space left.*step-00000002 is intact.*--resume"):
        recipe.run(config)
    ckpt = config.run_dir / "checkpoint"
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-00000002"]  # no debris
    assert not list(ckpt.glob(".tmp-*"))
    verify_manifest(ckpt / "step-00000002")
    monkeypatch.setattr("bayespref.trainer.save_optimizer", real_save)
    recipe.run(config, resume=True)
    assert_same_weights(recipe.weights(reference.run_dir), recipe.weights(config.run_dir))
    assert [r["step"] for r in train_records(config.run_dir)] == list(range(1, 13))


def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(recipe):
    """Killed by SIGKILL after a checkpoint (nothing can be saved at that point), the run
    resumes from its newest intact checkpoint and ends exactly where an uninterrupted run
    ends: weights, optimiser state, RNG (dropout) and data order carry over."""
    reference = recipe.config("reference", "optim.max_steps=40", "save_every=4")
    recipe.run(reference)

    config = recipe.config("killed", "optim.max_steps=40", "save_every=4")
    config_path = recipe.tmp_path / "killed.yaml"
    save_config(config, config_path)
    cmd = [sys.executable, "-m", "bayespref.cli", recipe.command, "--config", str(config_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = config.run_dir / "checkpoint"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not list(ckpt.glob("step-*")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    steps_before = [r["step"] for r in train_records(config.run_dir)]
    assert 4 <= max(steps_before) < 40  # killed mid-run

    recipe.run(config, resume=True)
    assert_same_weights(recipe.weights(reference.run_dir), recipe.weights(config.run_dir))
    assert [r["step"] for r in train_records(config.run_dir)] == list(range(1, 41))
