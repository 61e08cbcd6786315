"""What ``--resume`` does with every state a run directory can be in, through the CLI.

- no usable checkpoint (killed before the first save, or every checkpoint corrupt): a warning,
  a fresh start, and no step recorded twice in ``metrics.jsonl``;
- a finished run: nothing is trained again and ``summary.json`` keeps its results;
- no run at all: a one-line error (exit 2), nothing written;
- a copied checkpoint folder (``step-00000006.bak``): ignored;
- a wrong file named ``model.safetensors`` with recomputed checksums: a one-line error naming
  the file when loaded, and ``--resume`` falls back to the newest older intact checkpoint;
- a full disk while saving the best model: the documented one-line error (exit 2), the earlier
  outputs intact, and ``--resume`` finishes the run.

Both recipes share the trainer; the preference model is tested for every case, calibration
for the record-keeping cases (no usable checkpoint, finished run, missing run).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from bayespref.calibration import CalibrationConfig
from bayespref.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    verify_manifest,
    write_manifest,
)
from bayespref.cli import main as cli_main
from bayespref.config import load_config, load_yaml, save_config
from bayespref.model import PreferenceModel
from bayespref.train import PreferenceTask

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

STEPS = 6


def pm_args(tmp_path: Path, encoder: str, name: str = "run", *overrides: str) -> list[str]:
    """``bayespref train`` overrides for a 6-step run with a checkpoint every 2 steps."""
    return [
        f"output_dir={tmp_path / 'runs'}",
        f"name={name}",
        f"model.encoder={encoder}",
        "model.max_length=32",
        "data.train={n: 64, seed: 1}",
        "data.valid={n: 16, seed: 2}",
        "optim.batch_size=8",
        f"optim.max_steps={STEPS}",
        "eval_every=2",
        "save_every=2",
        "keep_last=3",
        "progress=false",
        *overrides,
    ]


def records(run_dir: Path) -> list[tuple[int, str]]:
    """``(step, split)`` of every metrics.jsonl record, in file order."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["split"]) for r in map(json.loads, lines)]


def once_each(eval_split: str, eval_steps: list[int], steps: int = STEPS) -> list:
    """The records of an uninterrupted run: every step once, evaluations after their step."""
    expected: list[tuple[int, str]] = [(0, eval_split)] if 0 in eval_steps else []
    for step in range(1, steps + 1):
        expected.append((step, "train"))
        if step in eval_steps:
            expected.append((step, eval_split))
    return expected


PM_RECORDS = once_each("valid", [2, 4, 6])


def final_weights(run_dir: Path) -> tuple[str, dict]:
    folder = latest_checkpoint(run_dir / "checkpoint")
    assert folder is not None
    # cloned: the loaded tensors may share memory with the file, which a test then corrupts
    tensors = load_file(str(folder / "model" / "model.safetensors"))
    return folder.name, {key: value.clone() for key, value in tensors.items()}


def assert_same_weights(a: tuple[str, dict], b: tuple[str, dict]) -> None:
    assert a[0] == b[0] and a[1].keys() == b[1].keys()
    for key in a[1]:
        torch.testing.assert_close(b[1][key], a[1][key], rtol=1e-5, atol=1e-6)


def error_line(capsys, command: str) -> str:
    """The one line a known failure prints last on stderr, with no traceback (progress bars
    of the libraries may come before it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"bayespref {command}: error: "), err
    return last


def not_safetensors(path: Path) -> None:
    """Replace a checkpoint file with another format and recompute the manifest's checksums,
    as a user copying the wrong file into place would get (the checksums cannot catch it)."""
    path.write_text("this is not a safetensors file\n" * 20)
    write_manifest(path.parent.parent if path.parent.name == "model" else path.parent)


# -- no usable checkpoint -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["killed before the first save", "every checkpoint corrupt"])
def test_resume_without_a_usable_checkpoint_starts_over_recording_each_step_once(
    tmp_path, tiny_encoder_dir, capsys, caplog, monkeypatch, how
):
    args = pm_args(tmp_path, tiny_encoder_dir)
    run = tmp_path / "runs" / "run"
    assert cli_main(["train", *args]) == 0
    reference = final_weights(run)
    if how == "killed before the first save":
        # what a kill between the first records and the first save leaves: records, no step
        # checkpoint (a failed first save leaves the same)
        for folder in list_checkpoints(run / "checkpoint"):
            shutil.rmtree(folder)
        lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
        (run / "metrics.jsonl").write_text("".join(lines[:3]))  # steps 1-2 and step 2's eval
    else:
        for folder in list_checkpoints(run / "checkpoint"):
            weights = folder / "model" / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[:-100])
    capsys.readouterr()

    with caplog.at_level(logging.WARNING):
        assert cli_main(["train", "--config", str(run / "config.yaml"), "--resume"]) == 0
    assert "no intact checkpoint to resume from; starting over" in caplog.text
    assert records(run) == PM_RECORDS  # steps 1-2 are not recorded twice
    assert_same_weights(reference, final_weights(run))  # the fresh start is the same run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["final"] is not None


# -- a finished run -----------------------------------------------------------------------------


def test_resume_of_a_finished_run_trains_nothing_and_keeps_its_summary(
    tmp_path, tiny_encoder_dir, capsys, monkeypatch
):
    args = pm_args(tmp_path, tiny_encoder_dir)
    run = tmp_path / "runs" / "run"
    assert cli_main(["train", *args]) == 0
    summary = json.loads((run / "summary.json").read_text())
    metrics = (run / "metrics.jsonl").read_text()
    best = json.loads((run / "checkpoint" / "best" / "metrics.json").read_text())
    assert summary["final"] is not None and summary["best"] is not None
    capsys.readouterr()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run trained or evaluated again")

    monkeypatch.setattr("bayespref.trainer.micro_batch_indices", no_training)  # no step
    monkeypatch.setattr(PreferenceTask, "evaluate", no_training)
    assert cli_main(["train", "--config", str(run / "config.yaml"), "--resume"]) == 0
    assert "validation metrics of the best checkpoint" in capsys.readouterr().out
    # the same records and results (read back from the run's own files, so equal exactly)
    assert (run / "metrics.jsonl").read_text() == metrics
    assert json.loads((run / "summary.json").read_text()) == summary
    assert json.loads((run / "checkpoint" / "best" / "metrics.json").read_text()) == best


# -- no run -------------------------------------------------------------------------------------


def test_resume_of_a_missing_run_is_a_one_line_error_and_writes_nothing(
    tmp_path, tiny_encoder_dir, capsys
):
    args = pm_args(tmp_path, tiny_encoder_dir, "typo")
    assert cli_main(["train", "--resume", *args]) == 2
    err = error_line(capsys, "train")
    assert f"{tmp_path / 'runs' / 'typo'} holds no run to resume" in err
    assert "without --resume" in err
    run = tmp_path / "runs" / "typo"
    assert not (run / "metrics.jsonl").exists() and not (run / "config.yaml").exists()
    assert not (run / "checkpoint").exists()
    assert cli_main(["train", *args]) == 0  # a fresh start is not blocked by the attempt


# -- copied and corrupt checkpoints -------------------------------------------------------------


def test_a_copied_checkpoint_folder_is_ignored_by_resume_score_and_pruning(
    tmp_path, tiny_encoder_dir, capsys
):
    args = pm_args(tmp_path, tiny_encoder_dir, "run", f"optim.max_steps={STEPS - 2}")
    run = tmp_path / "runs" / "run"
    assert cli_main(["train", *args]) == 0
    ckpt = run / "checkpoint"
    shutil.copytree(ckpt / "step-00000004", ckpt / "step-00000004.bak")
    (ckpt / "notes").mkdir()
    assert [p.name for p in list_checkpoints(ckpt)] == ["step-00000002", "step-00000004"]

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"context": "hi", "response": "hello"}) + "\n")
    scored = tmp_path / "scored.jsonl"
    score = ["score", "--run", str(run), "--input", str(pairs), "--output", str(scored)]
    assert cli_main([*score, "--checkpoint", "last"]) == 0
    assert len(scored.read_text().splitlines()) == 1

    # the run goes on to step 6 (the config says 4; continue it with 6)
    config = load_config(run / "config.yaml", [f"optim.max_steps={STEPS}"])
    save_config(config, tmp_path / "longer.yaml")
    assert cli_main(["train", "--config", str(tmp_path / "longer.yaml"), "--resume"]) == 0
    assert [p.name for p in list_checkpoints(ckpt)] == [
        "step-00000002",
        "step-00000004",
        "step-00000006",
    ]
    assert (ckpt / "step-00000004.bak").is_dir() and (ckpt / "notes").is_dir()  # not pruned
    assert records(run) == PM_RECORDS


def test_a_wrong_weights_file_with_recomputed_checksums_is_named_and_resume_falls_back(
    tmp_path, tiny_encoder_dir, capsys, caplog
):
    reference = tmp_path / "runs" / "reference"
    assert cli_main(["train", *pm_args(tmp_path, tiny_encoder_dir, "reference")]) == 0
    args = pm_args(tmp_path, tiny_encoder_dir)
    run = tmp_path / "runs" / "run"
    assert cli_main(["train", *args]) == 0
    ckpt = run / "checkpoint"
    bad = ckpt / "step-00000006" / "model" / "model.safetensors"
    not_safetensors(bad)
    verify_checked = ckpt / "step-00000006"
    with pytest.raises(CheckpointError, match=r"model/model\.safetensors is not a readable") as e:
        verify_manifest(verify_checked)
    assert str(bad.relative_to(verify_checked)) in str(e.value) and "\n" not in str(e.value)

    # loading it by name: one line naming the file, exit 2
    capsys.readouterr()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"response": "hello"}) + "\n")
    out = tmp_path / "scored.jsonl"
    score = ["score", "--run", str(run), "--input", str(pairs), "--output", str(out)]
    assert cli_main([*score, "--checkpoint", "step-00000006"]) == 2
    err = error_line(capsys, "score")
    assert "step-00000006: model/model.safetensors is not a readable safetensors file" in err
    assert not out.exists()
    # "last" is the newest checkpoint that can be read
    with caplog.at_level(logging.WARNING):
        assert cli_main([*score, "--checkpoint", "last"]) == 0
    assert "skipping checkpoint" in caplog.text and "step-00000006" in caplog.text

    # --resume falls back to step 4, redoes steps 5-6 and ends with the uninterrupted weights
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert cli_main(["train", "--config", str(run / "config.yaml"), "--resume"]) == 0
    assert "step-00000006" in caplog.text  # the skipped checkpoint is named
    assert "resumed from" in caplog.text and "step-00000004 (step 4)" in caplog.text
    verify_manifest(ckpt / "step-00000006")  # rewritten, intact
    assert records(run) == PM_RECORDS
    assert_same_weights(final_weights(reference), final_weights(run))


def test_a_wrong_best_model_file_is_a_one_line_error_naming_it(tmp_path, tiny_encoder_dir):
    args = pm_args(tmp_path, tiny_encoder_dir, "run", "optim.max_steps=2")
    assert cli_main(["train", *args]) == 0
    best = tmp_path / "runs" / "run" / "checkpoint" / "best"
    not_safetensors(best / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        PreferenceModel.from_run(tmp_path / "runs" / "run")
    message = str(err.value)
    assert message.startswith(f"{best}: model.safetensors is not a readable safetensors file")
    assert "header too large" in message and "\n" not in message


# -- a full disk while saving the best model ----------------------------------------------------


@pytest.mark.parametrize("failing_save", [1, 2])
def test_a_full_disk_while_saving_the_best_model_is_the_documented_error(
    tmp_path, tiny_encoder_dir, capsys, monkeypatch, failing_save
):
    """Every evaluation is made an improvement, so the best model is saved at steps 2, 4, 6;
    the ``failing_save``-th save fails as safetensors reports a full disk."""
    monkeypatch.setattr("bayespref.trainer.is_improvement", lambda *args: True)
    real_save_best = PreferenceTask.save_best
    calls = {"n": 0}

    def disk_full(self, model, folder):
        calls["n"] += 1
        if calls["n"] == failing_save:
            raise SafetensorError(
                'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
                'space left on device" })'
            )
        real_save_best(self, model, folder)

    monkeypatch.setattr(PreferenceTask, "save_best", disk_full)
    args = pm_args(tmp_path, tiny_encoder_dir)
    run = tmp_path / "runs" / "run"
    assert cli_main(["train", *args]) == 2
    err = error_line(capsys, "train")
    step = 2 * failing_save
    best = run / "checkpoint" / "best"
    assert err.startswith(
        f"bayespref train: error: could not write the best model of step {step} to {best} ("
    )
    assert "No space left on device" in err
    if failing_save == 1:
        assert "no earlier checkpoint exists" in err
        assert not best.exists()
    else:
        assert f"the previous checkpoint {best} is intact" in err
        verify_manifest(best)  # the earlier best model is untouched
        assert json.loads((best / "metrics.json").read_text())["step"] == step - 2
    assert err.endswith("Free space (or fix the error) and continue with --resume.")
    assert not list((run / "checkpoint").glob(".tmp-*"))  # no debris
    assert [s for s, split in records(run) if split == "train"] == list(range(1, step + 1))

    monkeypatch.setattr(PreferenceTask, "save_best", real_save_best)  # space freed
    assert cli_main(["train", "--config", str(run / "config.yaml"), "--resume"]) == 0
    assert records(run) == PM_RECORDS
    assert json.loads((best / "metrics.json").read_text())["step"] == STEPS


# -- calibration: the same trainer, the same record keeping -------------------------------------


def calibration_args(tmp_path: Path, generator: str, pm: str, name: str) -> list[str]:
    return [
        f"output_dir={tmp_path / 'runs'}",
        f"name={name}",
        f"generator.name={generator}",
        "generator.max_context_tokens=40",
        "generator.max_target_tokens=12",
        "data.n=10",
        "data.n_eval=2",
        f"scorer.run={pm}",
        "decoding.num_beams=4",
        "decoding.num_beam_groups=2",
        "decoding.max_new_tokens=6",
        "decoding.min_new_tokens=2",
        "decoding.batch_size=4",
        f"candidates={tmp_path / 'candidates.jsonl'}",
        "optim.batch_size=2",
        "optim.max_steps=4",
        "optim.lr=1e-3",
        "eval_every=2",
        "save_every=2",
        "progress=false",
    ]


def test_calibrate_resume_keeps_the_record_in_every_case(
    tmp_path, char_generator_dir, pm_run, capsys, caplog
):
    cal_records = once_each("eval", [0, 2, 4], steps=4)
    args = calibration_args(tmp_path, char_generator_dir, pm_run, "cal")
    run = tmp_path / "runs" / "cal"
    config_path = str(run / "config.yaml")
    assert cli_main(["calibrate", *args]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_eval_gold_nll"] is not None
    assert summary["initial_eval_gold_nll"] is not None
    assert records(run) == cal_records
    load_yaml(CalibrationConfig, config_path)  # the run's own config resumes it

    # a finished run: nothing trained, the summary keeps both evaluations
    assert cli_main(["calibrate", "--config", config_path, "--resume"]) == 0
    assert json.loads((run / "summary.json").read_text()) == summary
    assert records(run) == cal_records

    # no usable checkpoint: a fresh start, step 0's evaluation and every step recorded once
    for folder in list_checkpoints(run / "checkpoint"):
        not_safetensors(folder / "trainable.safetensors")
    with caplog.at_level(logging.WARNING):
        assert cli_main(["calibrate", "--config", config_path, "--resume"]) == 0
    assert "no intact checkpoint to resume from; starting over" in caplog.text
    assert records(run) == cal_records
    again = json.loads((run / "summary.json").read_text())
    assert again["final_eval_gold_nll"] == pytest.approx(summary["final_eval_gold_nll"], rel=1e-5)
    assert again["initial_eval_gold_nll"] == pytest.approx(
        summary["initial_eval_gold_nll"], rel=1e-5
    )

    # no run: one line, exit 2
    capsys.readouterr()
    missing = calibration_args(tmp_path, char_generator_dir, pm_run, "typo")
    assert cli_main(["calibrate", "--resume", *missing]) == 2
    assert "holds no run to resume" in error_line(capsys, "calibrate")
    assert not (tmp_path / "runs" / "typo" / "metrics.jsonl").exists()
