"""export-pairs and the TRL reward function: pair strategies and skip counts by hand, file:line
errors, one real trl.DPOTrainer step on the exported pairs, one reward per completion."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from bayespref.calibration.candidates import candidates_meta_path, read_candidates
from bayespref.cli.export import make_parser
from bayespref.data.schema import DataError
from bayespref.export import (
    completion_text,
    export_pairs,
    make_reward_function,
    prompt_context,
    ranked_candidates,
)
from bayespref.lm import chat_messages, plain_prompt
from bayespref.testing import save_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def cand(text: str, score: float, count: int = 1) -> dict:
    return {"text": text, "score": score, "count": count}


ROWS = [
    {
        "id": "a",
        "context": "I failed my exam.",
        "gold": "That sounds so hard. How are you holding up?",
        # deliberately not in score order: the export ranks by score itself
        "candidates": [cand("ok", 0.1), cand("I'm sorry.", 0.9, 3), cand("Hmm.", 0.5)],
        "num_generated": 5,
        "num_unique": 3,
    },
    {
        "id": "b",
        "context": ["My dog died.", "I miss him."],
        "gold": None,
        "candidates": [cand("I'm here for you.", 0.8), cand("Whatever.", 0.8)],
        "num_generated": 2,
        "num_unique": 2,
    },
    {
        "id": "c",
        "context": "I lost my job.",
        "gold": "I'm so sorry.",
        "candidates": [cand("That is rough.", 0.4, 4)],
        "num_generated": 4,
        "num_unique": 1,
    },
]


def write_cache(path, rows=ROWS, meta=True):
    """A candidate file as calibration writes it: rows, and the settings in <stem>.meta.json."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if meta:
        settings = {"settings": {"decoding": {"num_beams": 4}}, "complete": True}
        candidates_meta_path(path).write_text(json.dumps(settings))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- pairs by hand ------------------------------------------------------------------------------


def test_best_vs_worst_skips_ties_and_single_candidates_and_counts_them(tmp_path):
    cache = write_cache(tmp_path / "c.jsonl")
    meta, rows = read_candidates(cache)
    assert meta["settings"] == {"decoding": {"num_beams": 4}}
    assert [c["score"] for c in ranked_candidates(rows[0])] == [0.9, 0.5, 0.1]

    report = export_pairs(cache, tmp_path / "pairs.jsonl")
    pairs = read_jsonl(tmp_path / "pairs.jsonl")
    assert pairs == [
        {
            "id": "a",
            "prompt": "I failed my exam.\n",
            "chosen": "I'm sorry.",
            "rejected": "ok",
            "score_margin": pytest.approx(0.8),
            "chosen_score": 0.9,
            "rejected_score": 0.1,
        }
    ]
    assert report.contexts == 3 and report.pairs == 1
    assert dict(report.skipped) == {"equal scores": 1, "fewer than 2 distinct candidates": 1}
    assert "3 contexts -> 1 pairs" in report.summary()


def test_all_pairs_above_a_minimum_margin(tmp_path):
    cache = write_cache(tmp_path / "c.jsonl")
    # context a: margins 0.9-0.5=0.4, 0.9-0.1=0.8, 0.5-0.1=0.4; b: one tie; c: one candidate
    report = export_pairs(cache, tmp_path / "all.jsonl", strategy="all-pairs")
    pairs = read_jsonl(tmp_path / "all.jsonl")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [
        ("I'm sorry.", "Hmm."),
        ("I'm sorry.", "ok"),
        ("Hmm.", "ok"),
    ]
    assert dict(report.skipped) == {"equal scores": 1, "fewer than 2 distinct candidates": 1}

    report = export_pairs(cache, tmp_path / "far.jsonl", strategy="all-pairs", min_margin=0.5)
    assert [p["score_margin"] for p in read_jsonl(tmp_path / "far.jsonl")] == [pytest.approx(0.8)]
    assert report.skipped["margin below min_margin"] == 2
    assert report.pairs == 1


def test_gold_vs_worst_needs_a_gold(tmp_path):
    cache = write_cache(tmp_path / "c.jsonl")
    report = export_pairs(
        cache, tmp_path / "gold.jsonl", strategy="gold-vs-worst", prompt_format="conversational"
    )
    pairs = read_jsonl(tmp_path / "gold.jsonl")
    assert [p["id"] for p in pairs] == ["a", "c"]
    assert pairs[0]["prompt"] == [{"role": "user", "content": "I failed my exam."}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": ROWS[0]["gold"]}]
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "ok"}]
    assert pairs[0]["score_margin"] is None  # the gold has no score
    assert dict(report.skipped) == {"no gold": 1}


def test_prompts_follow_the_one_prompt_format_and_the_reward_inverts_it(tmp_path):
    rows = [dict(ROWS[1], candidates=[cand("I'm here for you.", 0.8), cand("Whatever.", -0.9)])]
    cache = write_cache(tmp_path / "c.jsonl", rows)
    export_pairs(cache, tmp_path / "p.jsonl", prompt_format="conversational")
    (pair,) = read_jsonl(tmp_path / "p.jsonl")
    # turns alternate back from the last one, the user's
    expected = [
        {"role": "assistant", "content": "My dog died."},
        {"role": "user", "content": "I miss him."},
    ]
    assert pair["prompt"] == expected == chat_messages(ROWS[1]["context"])
    assert pair["score_margin"] == pytest.approx(1.7)
    export_pairs(cache, tmp_path / "t.jsonl", prompt_format="text")
    (pair,) = read_jsonl(tmp_path / "t.jsonl")
    assert pair["prompt"] == "My dog died.\nI miss him.\n" == plain_prompt(ROWS[1]["context"])
    # the reward function hands the preference model the turns the candidates were scored on
    assert prompt_context(expected) == prompt_context(pair["prompt"]) == ROWS[1]["context"]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": "x", "context": "hi", "candidates": [', "not valid JSON"),
        ('{"id": "x", "context": "hi"}', "'candidates'"),
        ('{"id": "x", "context": 3, "candidates": []}', "'context'"),
        ('{"id": "x", "context": "hi", "candidates": [{"text": "a", "score": NaN}]}', "finite"),
        ('{"id": "x", "context": "hi", "candidates": [{"text": "a"}]}', "finite"),
        ('{"id": "x", "context": "hi", "candidates": [{"text": 1, "score": 1}]}', "'text'"),
        (
            '{"id": "x", "context": "hi", "candidates": [{"text": "a", "score": 1, "count": 0}]}',
            "count",
        ),
        ('{"meta": {}}', "'id'"),  # settings live in <stem>.meta.json, not on a first line
    ],
)
def test_malformed_cache_lines_name_file_and_line(tmp_path, line, problem):
    path = tmp_path / "cache.jsonl"
    write_cache(path, [ROWS[0], ROWS[2]])
    path.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")
    with pytest.raises(DataError, match=problem) as err:
        export_pairs(path, tmp_path / "out.jsonl")
    assert str(err.value).startswith(f"{path}:2:")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_candidate_file_without_its_settings_is_refused(tmp_path):
    path = write_cache(tmp_path / "c.jsonl", meta=False)
    with pytest.raises(DataError, match=r"c\.meta\.json"):
        export_pairs(path, tmp_path / "out.jsonl")


def test_cli_export_pairs(tmp_path, capsys):
    cache = write_cache(tmp_path / "c.jsonl")
    parser = argparse.ArgumentParser()
    make_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "pairs.jsonl"
    args = parser.parse_args(
        [
            "export-pairs",
            "--candidates",
            str(cache),
            "--output",
            str(out),
            "--strategy",
            "all-pairs",
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "3 contexts -> 3 pairs" in printed and "1 equal scores" in printed
    assert len(read_jsonl(out)) == 3


# -- TRL ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt_format", ["text", "conversational"])
def test_exported_pairs_train_one_dpo_step(tmp_path, prompt_format):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    rows = [
        dict(r, id=f"{r['id']}{k}", candidates=[cand("That is hard.", 0.7), cand("k", -0.5)])
        for k in range(2)
        for r in ROWS
    ]
    cache = write_cache(tmp_path / "c.jsonl", rows)
    pairs = tmp_path / "pairs.jsonl"
    assert export_pairs(cache, pairs, prompt_format=prompt_format).pairs == 6
    dataset = load_dataset("json", data_files=str(pairs), split="train")

    folder = save_tiny_llama(tmp_path / "policy")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    before = [p.detach().clone() for p in model.parameters()]
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        per_device_train_batch_size=2,
        max_steps=1,
        learning_rate=1e-2,
        max_length=128,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    try:
        result = trainer.train()
    finally:
        from accelerate.state import AcceleratorState

        # TRL's accelerator state would otherwise clash with later trainings in this process
        AcceleratorState._reset_state(reset_partial_state=True)

    assert trainer.state.global_step == 1
    # policy = reference at the first step: the DPO loss is -log sigmoid(0) = log 2
    assert result.training_loss == pytest.approx(np.log(2), abs=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_reward_function_returns_one_float_per_completion(tmp_path, tiny_encoder_dir):
    from bayespref.config import ModelConfig
    from bayespref.data.synthetic import SYNTHETIC_LABEL_SPACE
    from bayespref.model import PreferenceModel

    torch.manual_seed(0)
    config = ModelConfig(encoder=tiny_encoder_dir, max_length=64)
    PreferenceModel.build(config, SYNTHETIC_LABEL_SPACE).save(tmp_path / "pm")
    reward = make_reward_function(tmp_path / "pm", batch_size=2)
    assert reward.__name__ == "preference_model_expected_utility"

    prompts = ["I failed my exam.", "I failed my exam.", "I lost my job."]
    completions = ["I'm so sorry.", "whatever", "That sounds hard. How are you?"]
    rewards = reward(prompts=prompts, completions=completions, completion_ids=[[1], [2], [3]])
    assert len(rewards) == 3 and all(type(r) is float for r in rewards)
    expected = reward.model.score(prompts, completions, rule="expected-utility")
    np.testing.assert_allclose(rewards, expected, rtol=1e-5)
    assert all(-1 <= r <= 1 for r in rewards)

    # conversational prompts and completions (GRPOTrainer with a chat dataset)
    conv_prompts = [
        [{"role": "system", "content": "Be kind."}, {"role": "user", "content": p}] for p in prompts
    ]
    conv_completions = [[{"role": "assistant", "content": c}] for c in completions]
    assert prompt_context(conv_prompts[0]) == ["I failed my exam."]
    assert completion_text(conv_completions[1]) == "whatever"
    conv = reward(conv_prompts, conv_completions)
    assert len(conv) == 3
    np.testing.assert_allclose(
        conv, reward.model.score([[p] for p in prompts], completions), rtol=1e-5
    )
    with pytest.raises(ValueError, match="2 prompts but 3 completions"):
        reward(prompts[:2], completions)

    worst = make_reward_function(tmp_path / "pm", rule="worst-class")
    assert all(-1 <= r <= 0 for r in worst(prompts, completions))
