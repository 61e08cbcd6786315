"""train-pairwise (issue 15): the recipe on the shared trainer with every loss, with and
without ties; exact resume; one-line config errors; and end to end, synthetic pairs ->
train-pairwise -> export-model (num_labels=1) -> transformers without bayespref (same rewards
to 1e-5) -> TRL's RewardTrainer trains one step from the exported folder on bayespref's pairs."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bayespref.checkpoint import step_dir_name
from bayespref.cli import main
from bayespref.config.pairwise import PAIRWISE_LOSS_NAMES, load_pairwise_config
from bayespref.data.pairwise import trl_records
from bayespref.data.synthetic.pairs import make_synthetic_pairs
from bayespref.hf_export import EXACT_TOL
from bayespref.reward_model import RewardModel
from bayespref.train_pairwise import train_pairwise
from bayespref.trainer_utils import read_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")


def overrides(tiny_encoder_dir: str, out: Path, *extra: str) -> list[str]:
    return [
        f"output_dir={out}",
        f"model.encoder={tiny_encoder_dir}",
        "model.max_length=48",
        "model.head_hidden=8",
        "data.train={n: 32, seed: 1}",
        "data.valid={n: 12, seed: 2}",
        "optim.batch_size=8",
        "optim.max_steps=2",
        "eval_every=2",
        "progress=false",
        *extra,
    ]


@pytest.mark.parametrize(
    "loss, ties",
    [(name, True) for name in PAIRWISE_LOSS_NAMES] + [("majority", False), ("margin", False)],
)
def test_every_loss_trains_and_evaluates(loss, ties, tiny_encoder_dir, tmp_path):
    config = load_pairwise_config(
        None,
        overrides(tiny_encoder_dir, tmp_path, "name=r", f"loss.name={loss}", f"ties={ties}"),
    )
    result = train_pairwise(config)
    assert result.steps == 2
    valid = [r for r in read_jsonl(result.run_dir / "metrics.jsonl") if r["split"] == "valid"]
    assert [r["step"] for r in valid] == [2]
    metrics = valid[0]
    for name in ("loss", "accuracy", "soft_ce", "ece", "brier", "kl_true"):
        assert np.isfinite(metrics[name]), name
    assert ("theta" in metrics) == ties
    best = RewardModel.from_run(result.run_dir)
    assert best.ties == ties
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["best_step"] == 2 and summary["train_pairs"] == 32


def test_frozen_encoder_trains_the_head_and_theta_on_cached_features(tiny_encoder_dir, tmp_path):
    cache = tmp_path / "features"
    config = load_pairwise_config(
        None,
        overrides(
            tiny_encoder_dir,
            tmp_path,
            "name=frozen",
            "model.freeze_encoder=true",
            f"model.feature_cache={cache}",
            "optim.lr=0.01",
        ),
    )
    result = train_pairwise(config)
    assert any(cache.rglob("shard-*.safetensors"))
    saved = load_file(str(result.run_dir / "checkpoint" / "best" / "model.safetensors"))
    assert "tie_logit" in saved and not any(k.startswith("encoder.") for k in saved)
    assert float(saved["tie_logit"]) != 0.0  # theta trained from its start, softplus(0)


def test_resume_ends_with_the_uninterrupted_weights(tiny_encoder_dir, tmp_path):
    args = overrides(
        tiny_encoder_dir, tmp_path, "optim.max_steps=4", "save_every=2", "eval_every=2"
    )
    whole = train_pairwise(load_pairwise_config(None, [*args, "name=whole"]))
    expected = load_file(
        str(whole.run_dir / "checkpoint" / step_dir_name(4) / "model" / "model.safetensors")
    )
    cut = tmp_path / "cut"
    shutil.copytree(whole.run_dir, cut)
    shutil.rmtree(cut / "checkpoint" / step_dir_name(4))  # as if stopped after step 2's checkpoint
    resumed = train_pairwise(load_pairwise_config(None, [*args, "name=cut"]), resume=True)
    got = load_file(
        str(resumed.run_dir / "checkpoint" / step_dir_name(4) / "model" / "model.safetensors")
    )
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-6, rtol=0)
    steps = [r["step"] for r in read_jsonl(cut / "metrics.jsonl") if r["split"] == "train"]
    assert steps == [1, 2, 3, 4]


def test_trl_file_with_held_out_pairs(tiny_encoder_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = trl_records(make_synthetic_pairs(40, seed=3), with_margin=True)
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = overrides(tiny_encoder_dir, tmp_path, "name=trl", "loss.name=margin", "ties=false")
    args = [a for a in args if not a.startswith("data.")]
    args += ["data.format=auto", f"data.train={pairs}", "data.valid_fraction=0.25"]
    result = train_pairwise(load_pairwise_config(None, args))
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["valid_pairs"] == round(0.25 * len(rows))
    assert "kl_true" not in summary["best"]  # a file has no P*


@pytest.mark.parametrize(
    "override, message",
    [
        ("loss.name=bogus", r"loss.name must be one of \['forward-kl'"),
        ("data.train=pairs.jsonl", r"data.train='pairs.jsonl': format synthetic generates"),
        ("select_metric=agreement_spearman", r"select_metric must be one of \['loss'"),
        ("model.kind=annotator-heads", r"a reward model has one head"),
    ],
)
def test_config_errors_are_one_line(override, message, capsys):
    assert main(["train-pairwise", override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("bayespref train-pairwise: error: ")
    assert re.search(message, err), err


# Where bayespref cannot be imported (as tests/test_hf_export.py): load the exported folder,
# compute rewards, then let TRL's RewardTrainer take one step from the folder on the pairs.
OUTSIDE = r"""
import importlib.util, json, sys
assert importlib.util.find_spec("bayespref") is None, "bayespref is importable"
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
folder, probes, pairs_file, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
tokenizer.truncation_side = "left"  # as bayespref: the context is cut from the left
rewards = []
for context, response in probes:
    enc = tokenizer(context, response, return_tensors="pt", truncation="only_first",
                    max_length=128) if context else tokenizer(response, return_tensors="pt")
    with torch.no_grad():
        rewards.append(model(**enc).logits[0, 0].item())
from datasets import load_dataset
from trl import RewardConfig, RewardTrainer
args = RewardConfig(output_dir=out, max_steps=1, per_device_train_batch_size=4, report_to=[],
                    use_cpu=True, save_strategy="no", logging_steps=1, trust_remote_code=True,
                    learning_rate=1e-3, eos_token="[SEP]")
trainer = RewardTrainer(model=folder, args=args,
                        train_dataset=load_dataset("json", data_files=pairs_file, split="train"))
before = [p.detach().clone() for p in trainer.model.parameters()]
result = trainer.train()
changed = any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
print(json.dumps({"rewards": rewards, "num_labels": model.config.num_labels,
                  "steps": result.global_step, "loss": result.training_loss,
                  "changed": changed}))
"""


@pytest.mark.slow
def test_end_to_end_train_export_transformers_and_trl(tiny_encoder_dir, tmp_path):
    run = tmp_path / "rm"
    args = overrides(tiny_encoder_dir, tmp_path, "name=rm", "model.max_length=128")
    assert main(["train-pairwise", *args]) == 0
    folder = tmp_path / "exported"
    assert main(["export-model", "--run", str(run), "--out", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "reward"} and "tie_logit" in config["bayespref"]["state"]

    data = make_synthetic_pairs(8, seed=5)
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text(
        "".join(json.dumps(r) + "\n" for r in trl_records(data, separator="[SEP]"))
    )
    probes = [(e.context[0], e.response_a) for e in data.examples[:4]] + [(None, "Just a reply.")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(site.getsitepackages()))
    env.pop("WORLD_SIZE", None)
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            OUTSIDE,
            str(folder),
            json.dumps(probes),
            str(pairs_file),
            str(tmp_path / "trl"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outside = json.loads(result.stdout.strip().splitlines()[-1])
    model = RewardModel.from_run(run)
    expected = model.score([c for c, _ in probes], [r for _, r in probes])
    np.testing.assert_allclose(outside["rewards"], expected, atol=EXACT_TOL, rtol=0)
    assert outside["num_labels"] == 1
    assert outside["steps"] == 1 and np.isfinite(outside["loss"]) and outside["changed"]
