"""Faults during training: a second writer, non-finite values, signals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from bayespref import losses as losses_module
from bayespref.config import load_config
from bayespref.safety import NonFiniteError, RunLock, RunLockedError
from bayespref.train import train


def tiny(tmp_path, encoder, *overrides):
    return load_config(
        None,
        [
            f"output_dir={tmp_path}",
            "name=run",
            f"model.encoder={encoder}",
            "model.max_length=32",
            "data.train={n: 64, seed: 1}",
            "data.valid={n: 16, seed: 2}",
            "optim.batch_size=8",
            "optim.max_steps=6",
            "eval_every=2",
            "progress=false",
            *overrides,
        ],
    )


def test_a_run_directory_in_use_is_refused(tmp_path, tiny_encoder_dir):
    config = tiny(tmp_path, tiny_encoder_dir)
    with RunLock(config.run_dir):
        with pytest.raises(RunLockedError, match=r"in use by pid \d+"):
            train(config)
    assert not (config.run_dir / "metrics.jsonl").exists()  # nothing was written
    train(config)  # the lock is released with its holder


def _poison_step(monkeypatch, bad_calls: set[int]):
    """Make the training loss NaN on the given (1-based) training calls."""
    real = losses_module.LOSSES["forward-kl"]
    calls = {"n": 0}

    def loss(logits, prior, **options):
        out = real(logits, prior, **options)
        if options.get("update_ema", True) and logits.requires_grad:
            calls["n"] += 1
            if calls["n"] in bad_calls:
                return out * float("nan")
        return out

    monkeypatch.setitem(losses_module.LOSSES, "forward-kl", loss)


def test_non_finite_loss_stops_without_applying_the_step(tmp_path, tiny_encoder_dir, monkeypatch):
    config = tiny(tmp_path, tiny_encoder_dir, "save_every=2")
    _poison_step(monkeypatch, {4})
    with pytest.raises(NonFiniteError, match="step 4.*not applied"):
        train(config)
    ckpt = config.run_dir / "checkpoint"
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-00000002"]
    record = json.loads((config.run_dir / "nonfinite.jsonl").read_text())
    assert record["step"] == 4 and len(record["ids"]) == 8
    weights = load_file(str(ckpt / "step-00000002" / "model" / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_non_finite_batches_can_be_skipped_and_counted(tmp_path, tiny_encoder_dir, monkeypatch):
    config = tiny(tmp_path, tiny_encoder_dir, "on_nonfinite=skip", "loss.normaliser=ema")
    _poison_step(monkeypatch, {3, 5})
    result = train(config)
    assert result.steps == 6
    state = json.loads(
        (config.run_dir / "checkpoint" / "step-00000006" / "trainer_state.json").read_text()
    )
    assert state["trainer"]["skipped_steps"] == 2
    assert all(torch.isfinite(torch.tensor(v)).all() for v in [state["task"]["m"]["__tensor__"]])
    weights = load_file(
        str(config.run_dir / "checkpoint" / "step-00000006" / "model" / "model.safetensors")
    )
    assert all(torch.isfinite(w).all() for w in weights.values())


def _final_weights(run_dir):
    from bayespref.checkpoint import latest_checkpoint

    path = latest_checkpoint(run_dir / "checkpoint")
    return path.name, load_file(str(path / "model" / "model.safetensors"))


def _assert_same_weights(a, b):
    assert a[0] == b[0]
    for key in a[1]:
        torch.testing.assert_close(a[1][key], b[1][key], rtol=1e-5, atol=1e-6)


def test_a_corrupted_checkpoint_is_detected_and_resume_falls_back(tmp_path, tiny_encoder_dir):
    from bayespref.checkpoint import CheckpointError, latest_checkpoint, verify_manifest

    reference = tiny(tmp_path, tiny_encoder_dir, "name=reference", "save_every=2")
    train(reference)
    config = tiny(tmp_path, tiny_encoder_dir, "save_every=2", "optim.max_steps=6", "keep_last=3")
    train(config)
    ckpt = config.run_dir / "checkpoint"
    weights = ckpt / "step-00000006" / "model" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="corrupted"):
        verify_manifest(ckpt / "step-00000006")
    assert latest_checkpoint(ckpt).name == "step-00000004"
    # --resume falls back to step 4, redoes steps 5-6 (replacing the corrupt folder) and ends
    # with the uninterrupted weights
    train(config, resume=True)
    verify_manifest(ckpt / "step-00000006")
    _assert_same_weights(_final_weights(config.run_dir), _final_weights(reference.run_dir))


def test_a_second_signal_exits_at_once(tmp_path):
    import subprocess
    import sys

    script = (
        "import os, signal, sys, time\n"
        "from bayespref.safety import GracefulStop\n"
        "with GracefulStop() as stop:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    print('requested', stop.requested, flush=True)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(10)\n"
        "    print('not reached', flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.splitlines() == ["requested True"]
    assert proc.returncode == 128 + 15


def test_resume_after_a_transient_non_finite_stop_matches_an_uninterrupted_run(
    tmp_path, tiny_encoder_dir, monkeypatch
):
    reference = tiny(tmp_path, tiny_encoder_dir, "name=reference", "save_every=2")
    train(reference)
    config = tiny(tmp_path, tiny_encoder_dir, "save_every=2")
    with monkeypatch.context() as patch:
        _poison_step(patch, {5})
        with pytest.raises(NonFiniteError):
            train(config)
    train(config, resume=True)  # the fault is gone: resume from step 4
    _assert_same_weights(_final_weights(config.run_dir), _final_weights(reference.run_dir))


def test_loading_a_corrupted_best_model_is_a_clear_error(tmp_path, tiny_encoder_dir):
    from bayespref.checkpoint import CheckpointError
    from bayespref.model import PreferenceModel

    config = tiny(tmp_path, tiny_encoder_dir, "optim.max_steps=2")
    train(config)
    PreferenceModel.from_run(config.run_dir)  # intact: loads
    weights = config.run_dir / "checkpoint" / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="model.safetensors is corrupted"):
        PreferenceModel.from_run(config.run_dir)
