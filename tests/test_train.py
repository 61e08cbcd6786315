"""The training recipe: schedule, batches, selection, resume, end-to-end runs of every loss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bayespref.cli import main as cli_main
from bayespref.config import load_config
from bayespref.evaluation import encode_split, objective_on_split
from bayespref.losses import LOSSES
from bayespref.safety import RunExistsError
from bayespref.train import make_objective, train
from bayespref.trainer_utils import is_improvement, lr_at, micro_batch_indices


def tiny_config(tmp_path: Path, encoder: str, *overrides: str):
    base = [
        f"output_dir={tmp_path / 'runs'}",
        "name=tiny",
        f"model.encoder={encoder}",
        "model.max_length=48",
        "data.format=synthetic",
        "data.train={n: 96, seed: 1}",
        "data.valid={n: 32, seed: 2}",
        "optim.batch_size=8",
        "optim.epochs=1",
        "optim.lr=1e-3",
        "eval_every=4",
        "progress=false",
    ]
    return load_config(None, base + list(overrides))


# -- pure pieces ------------------------------------------------------------------------------


def test_lr_schedule_warms_up_then_decays_to_zero_in_optimiser_steps():
    total, warmup, peak = 20, 4, 1.0
    lrs = [lr_at(s, total, warmup, peak) for s in range(total)]
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))
    # the last optimiser step uses the smallest positive rate and the schedule ends at 0
    assert lrs[-1] == pytest.approx(peak / (total - warmup))
    assert lr_at(total, total, warmup, peak) == 0.0


def test_schedule_length_is_counted_in_optimiser_steps_with_accumulation(
    tmp_path, tiny_encoder_dir
):
    """Regression (METHOD section 7): the reference sized the schedule in micro-batches but
    stepped it per optimiser step, so with accumulation 4 the decay got a quarter of the way."""
    config = tiny_config(tmp_path, tiny_encoder_dir, "optim.grad_accum=4", "optim.batch_size=4")
    train(config)
    rows = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    lrs = [r["lr"] for r in rows if r["split"] == "train"]
    micro_batches = 96 // 4
    assert len(lrs) == micro_batches // 4  # one record per optimiser step
    peak = config.optim.lr
    assert max(lrs) == pytest.approx(peak)
    assert lrs[-1] <= peak / (len(lrs) - int(0.1 * len(lrs))) + 1e-12  # decayed all the way


def test_micro_batches_are_random_permutations_split_across_ranks():
    n, b = 40, 4
    epoch0 = np.concatenate([micro_batch_indices(i, n, b, 1, 0, seed=3) for i in range(10)])
    assert sorted(epoch0) == list(range(n))  # every item once per epoch
    assert not np.array_equal(epoch0, np.arange(n))  # shuffled, not in file/length order
    epoch1 = np.concatenate([micro_batch_indices(i, n, b, 1, 0, seed=3) for i in range(10, 20)])
    assert not np.array_equal(epoch0, epoch1)  # a new order every epoch
    again = micro_batch_indices(7, n, b, 1, 0, seed=3)
    assert np.array_equal(again, epoch0[28:32])  # stateless: resuming needs only the index
    rank0 = micro_batch_indices(2, n, b, 2, 0, seed=3)
    rank1 = micro_batch_indices(2, n, b, 2, 1, seed=3)
    assert len(set(rank0) | set(rank1)) == 2 * b  # ranks share one global batch, disjointly


def test_first_evaluation_is_always_an_improvement_even_with_loss_above_one():
    """Regression: the reference saved a best checkpoint only when the eval loss was < 1."""
    assert is_improvement("loss", 3.7, None)
    assert is_improvement("soft_ce", 2.5, None)
    assert is_improvement("accuracy", 0.7, 0.6) and not is_improvement("accuracy", 0.5, 0.6)
    assert is_improvement("soft_ce", 0.5, 0.6) and not is_improvement("soft_ce", 0.7, 0.6)
    assert not is_improvement("loss", float("nan"), 1.0)


def test_validation_objective_uses_the_training_batch_size(tmp_path, tiny_encoder_dir):
    """Regression: the reference evaluated with another batch size than it trained with, so
    the batch-normalised validation and training losses were not comparable."""
    from bayespref.data import load_dataset
    from bayespref.model import PreferenceModel

    config = tiny_config(tmp_path, tiny_encoder_dir)
    model = PreferenceModel.build(config.model, load_dataset("synthetic", n=4).label_space).eval()
    split = encode_split(model, load_dataset("synthetic", n=32, seed=5), alpha=0.1)
    objective = make_objective(config.loss, None, training=False)
    at_8 = objective_on_split(model, split, objective, batch_size=8, seed=0)
    # by hand: the same seeded order, batches of 8, per-example losses averaged
    order = np.random.default_rng(0).permutation(32)
    with torch.no_grad():
        expected = []
        for b in range(4):
            batch = split.batch(order[b * 8 : (b + 1) * 8])
            inputs = {
                k: batch[k]
                for k in ("input_ids", "attention_mask", "response_mask", "token_type_ids")
            }
            expected.append(LOSSES["forward-kl"](model(**inputs), batch["prior"]))
    assert at_8 == pytest.approx(float(torch.cat(expected).mean()), rel=1e-5)
    at_32 = objective_on_split(model, split, objective, batch_size=32, seed=0)
    assert at_8 != pytest.approx(at_32, rel=1e-6)  # the batch normaliser depends on batch size


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_each_loss_trains_end_to_end_and_writes_a_run_directory(tmp_path, tiny_encoder_dir, loss):
    config = tiny_config(tmp_path, tiny_encoder_dir, f"loss.name={loss}", f"name={loss}")
    result = train(config)
    run = config.run_dir
    assert result.steps == 12
    for name in ("config.yaml", "metrics.jsonl", "curves.png", "summary.json", "data_stats.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoint" / "best" / "model.safetensors").is_file()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    valid = [r for r in rows if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [4, 8, 12]
    for key in (
        "loss",
        "soft_ce",
        "excess_ce",
        "jsd",
        "manhattan",
        "accuracy",
        "macro_f1",
        "ece",
        "brier",
        "entropy_spearman",
        "kl_true",
    ):
        assert key in valid[-1], key
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")
    best = json.loads((run / "checkpoint" / "best" / "metrics.json").read_text())
    assert best["soft_ce"] == pytest.approx(min(r["soft_ce"] for r in valid))


def test_rerunning_a_finished_run_without_resume_is_refused(tmp_path, tiny_encoder_dir):
    config = tiny_config(tmp_path, tiny_encoder_dir, "optim.max_steps=2")
    train(config)
    with pytest.raises(RunExistsError, match="--resume"):
        train(config)


def test_cli_train_evaluate_score(tmp_path, tiny_encoder_dir, capsys):
    runs = tmp_path / "runs"
    args = [
        "train",
        f"output_dir={runs}",
        "name=cli",
        f"model.encoder={tiny_encoder_dir}",
        "data.train={n: 64, seed: 1}",
        "data.valid={n: 16, seed: 2}",
        "optim.batch_size=8",
        "optim.max_steps=4",
        "eval_every=2",
        "progress=false",
    ]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "soft_ce" in out and "↓" in out
    assert cli_main(["evaluate", "--run", str(runs / "cli")]) == 0
    out = capsys.readouterr().out
    assert "train-mean predictor" in out and "accuracy" in out
    report = json.loads((runs / "cli" / "eval" / "valid.json").read_text())
    assert report["n"] == 16 and "soft_ce" in report["model"] and "soft_ce" in report["constant"]

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"id": "a", "context": "I lost my job", "response": "I'm so sorry."})
        + "\n"
        + json.dumps({"response": "whatever"})
        + "\n"
    )
    assert (
        cli_main(
            [
                "score",
                "--run",
                str(runs / "cli"),
                "--input",
                str(pairs),
                "--output",
                str(tmp_path / "scored.jsonl"),
            ]
        )
        == 0
    )
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").open()]
    assert [s["id"] for s in scored] == ["a", "pairs.jsonl:2"]
    for s in scored:
        assert sum(s["probs"].values()) == pytest.approx(1.0, abs=1e-5)
        assert s["score"] == pytest.approx(s["expected_utility"])

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"response": "fine"}\n{"response": \n')
    assert (
        cli_main(
            [
                "score",
                "--run",
                str(runs / "cli"),
                "--input",
                str(bad),
                "--output",
                str(tmp_path / "x.jsonl"),
            ]
        )
        == 2
    )
    assert f"{bad}:2:" in capsys.readouterr().err


def _run_training_subprocess(config_path: Path, resume: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bayespref.cli", "train", "--config", str(config_path)]
    if resume:
        cmd.append("--resume")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_checkpoint(proc, ckpt: Path, name: str) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(p.name >= name for p in ckpt.glob("step-*")):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {name} while running: " + proc.stderr.read().decode()[-2000:])


def test_sigterm_and_sigkill_then_resume_end_with_the_same_weights(tmp_path, tiny_encoder_dir):
    """A run stopped by SIGTERM (graceful: checkpoint at the next step, exit 130) and later
    killed by SIGKILL, resumed each time, ends where an uninterrupted run ends: weights,
    optimiser, RNG (dropout), EMA and data order all carry over."""
    common = [
        f"model.encoder={tiny_encoder_dir}",
        "model.max_length=48",
        "model.dropout=0.2",
        "data.train={n: 160, seed: 1}",
        "data.valid={n: 16, seed: 2}",
        "optim.batch_size=8",
        "optim.epochs=2",
        "eval_every=10",
        "save_every=5",
        "keep_last=2",
        "progress=false",
        "loss.normaliser=ema",
    ]
    from bayespref.config import save_config

    full = load_config(None, common + [f"output_dir={tmp_path}", "name=full"])
    train(full)

    stopped = load_config(None, common + [f"output_dir={tmp_path}", "name=stopped"])
    config_path = tmp_path / "stopped.yaml"
    save_config(stopped, config_path)
    ckpt = stopped.run_dir / "checkpoint"

    proc = _run_training_subprocess(config_path, resume=False)
    _wait_for_checkpoint(proc, ckpt, "step-00000005")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "--resume" in err.decode()
    stopped_at = max(int(p.name[5:]) for p in ckpt.glob("step-*"))
    assert 5 <= stopped_at < 40
    rows = [json.loads(x) for x in (stopped.run_dir / "metrics.jsonl").open()]
    assert max(r["step"] for r in rows) == stopped_at  # stopped at the step boundary it saved

    proc = _run_training_subprocess(config_path, resume=True)
    _wait_for_checkpoint(proc, ckpt, f"step-{stopped_at + 10:08d}")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert max(json.loads(x)["step"] for x in (stopped.run_dir / "metrics.jsonl").open()) < 40

    resumed = _run_training_subprocess(config_path, resume=True)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err.decode()[-3000:]

    final = max((full.run_dir / "checkpoint").glob("step-*"))
    final_resumed = max(ckpt.glob("step-*"))
    assert final.name == final_resumed.name == "step-00000040"
    weights_full = load_file(str(final / "model" / "model.safetensors"))
    weights_resumed = load_file(str(final_resumed / "model" / "model.safetensors"))
    assert weights_full.keys() == weights_resumed.keys()
    for key in weights_full:
        torch.testing.assert_close(weights_resumed[key], weights_full[key], rtol=1e-5, atol=1e-6)
    steps = [
        json.loads(x)["step"]
        for x in (stopped.run_dir / "metrics.jsonl").open()
        if json.loads(x)["split"] == "train"
    ]
    assert steps == list(range(1, 41))  # no duplicated or missing records after two resumes
