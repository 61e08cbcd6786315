"""evaluate-generator: hand-derived metrics, gold perplexity against a manual forward pass,
context files, judges, and one tiny end-to-end run through the command line."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from bayespref.data.contexts import contexts_from_spec, read_context_jsonl
from bayespref.data.schema import DataError
from bayespref.generator_eval import (
    GENERATOR_METRICS,
    DecodingConfig,
    OracleJudge,
    PreferenceModelJudge,
    corpus_bleu,
    decode,
    distinct_n,
    evaluate_generators,
    gold_examples,
    load_judge,
    make_parser,
    perplexity,
    rouge_l_f,
)
from bayespref.lm import chat_messages, gold_nll, load_generator
from tiny_lm import save_tiny_llama

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    """A tiny base model folder and a calibration-run-like folder with generator/ inside."""
    root = tmp_path_factory.mktemp("generators")
    base = save_tiny_llama(root / "base", seed=0)
    save_tiny_llama(root / "run" / "generator", seed=1)
    return base, root / "run"


# -- metrics, by hand ---------------------------------------------------------------------------


def test_distinct_n_counts_corpus_ngrams():
    texts = ["The cat the cat", "a cat!"]
    # words: [the, cat, the, cat] and [a, cat, !]
    # unigrams: 7 in all, distinct {the, cat, a, !} = 4
    assert distinct_n(texts, 1) == pytest.approx(4 / 7)
    # bigrams: (the cat) (cat the) (the cat) (a cat) (cat !) = 5, distinct 4
    assert distinct_n(texts, 2) == pytest.approx(4 / 5)
    assert math.isnan(distinct_n(["one"], 2))
    assert GENERATOR_METRICS["distinct_2"].higher_is_better is True


def test_bleu_rouge_and_perplexity_by_hand():
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100)
    # LCS 3 of 4 predicted and 3 of 3 reference tokens: F = 2 * 0.75 * 1 / 1.75
    assert rouge_l_f(["the cat sat down"], ["the cat sat"])[0] == pytest.approx(1.5 / 1.75)
    assert perplexity([2.0, 4.0], [1, 2]) == pytest.approx(math.exp(6 / 3))


# -- gold perplexity and decoding on a tiny model -------------------------------------------------


def test_gold_nll_equals_a_manual_teacher_forced_pass(generators):
    generator = load_generator(generators[0])
    model, tokenizer = generator.model, generator.tokenizer
    contexts = ["I failed my exam.", ["My dog died last week.", "I keep crying."]]
    golds = ["That sounds so hard.", "I'm sorry."]
    examples = gold_examples(generator, contexts, golds)
    sums, counts = gold_nll(model, examples, generator.pad_token_id, batch_size=2)

    turn_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    messages = [
        [{"role": "user", "content": "I failed my exam."}],
        # turns alternate back from the last, the user's
        [
            {"role": "assistant", "content": "My dog died last week."},
            {"role": "user", "content": "I keep crying."},
        ],
    ]
    for i, gold in enumerate(golds):
        assert chat_messages(contexts[i]) == messages[i]
        prompt = tokenizer.apply_chat_template(
            messages[i], tokenize=False, add_generation_prompt=True
        )
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        y = tokenizer(gold, add_special_tokens=False)["input_ids"] + [turn_end]
        with torch.no_grad():
            logits = model(torch.tensor([p + y])).logits[0]  # (T, V), one unpadded sequence
        log_probs = torch.log_softmax(logits.double(), dim=-1)
        expected = -sum(log_probs[len(p) - 1 + t, tok].item() for t, tok in enumerate(y))
        assert counts[i] == len(y)
        assert sums[i] == pytest.approx(expected, rel=1e-4)
    assert perplexity(sums, counts) == pytest.approx(math.exp(sums.sum() / counts.sum()))


def test_greedy_answers_do_not_depend_on_batching(generators):
    generator = load_generator(generators[0])
    contexts = ["Hi.", "My cat is sick and I am worried about her."]
    decoding = DecodingConfig(max_new_tokens=6, batch_size=2)
    batched, lengths = decode(generator, contexts, decoding)
    alone = [decode(generator, [c], decoding)[0][0] for c in contexts]
    assert batched == alone
    assert all(0 <= n <= 6 for n in lengths)


# -- inputs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("second_line", "problem"),
    [
        ('{"context": "hi", "gold": ', "not valid JSON"),
        ('{"gold": "fine"}', "'context'"),
        ('{"context": [], "gold": "x"}', "'context'"),
        ('{"context": "hi", "gold": 3}', "'gold'"),
    ],
)
def test_bad_context_lines_name_file_and_line(tmp_path, second_line, problem):
    path = tmp_path / "contexts.jsonl"
    path.write_text('{"id": "a", "context": "hello", "gold": "hi"}\n' + second_line + "\n")
    with pytest.raises(DataError, match=problem) as err:
        read_context_jsonl(path)
    assert str(err.value).startswith(f"{path}:2:")


def test_contexts_from_a_file_or_synthetic(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"context": ["a", "b"], "gold": null}\n\n{"id": 7, "context": "c"}\n')
    rows = contexts_from_spec(str(path))
    assert [r["id"] for r in rows] == ["c.jsonl:1", "7"]
    assert rows[0]["gold"] is None and rows[1]["gold"] is None
    with pytest.raises(DataError, match="'gold'"):
        read_context_jsonl(path, require_gold=True)
    synthetic = contexts_from_spec("synthetic:3:7")
    assert len(synthetic) == 3 and all(isinstance(r["gold"], str) for r in synthetic)
    assert synthetic == contexts_from_spec("synthetic:3:7")
    with pytest.raises(DataError, match="synthetic:N:SEED"):
        contexts_from_spec("synthetic:x")


def test_judges_and_generator_loading_errors(tmp_path, tiny_encoder_dir):
    from bayespref.config import ModelConfig
    from bayespref.data.synthetic import SYNTHETIC_LABEL_SPACE, SyntheticOracle
    from bayespref.model import PreferenceModel

    contexts, responses = [["I lost my job."], "I failed."], ["I'm so sorry.", "whatever"]
    oracle = load_judge("oracle")
    assert isinstance(oracle, OracleJudge)
    np.testing.assert_allclose(
        oracle.utilities(contexts, responses),
        SyntheticOracle().utilities(zip(contexts, responses)),
    )

    torch.manual_seed(0)
    pm = PreferenceModel.build(
        ModelConfig(encoder=tiny_encoder_dir, max_length=64), SYNTHETIC_LABEL_SPACE
    )
    pm.save(tmp_path / "pm")
    judge = load_judge(str(tmp_path / "pm"), rule="worst-class")
    assert isinstance(judge, PreferenceModelJudge)
    u = judge.utilities(contexts, responses)
    assert u.shape == (2,) and np.all((u <= 0) & (u >= -1))  # -q(harmful)

    with pytest.raises(FileNotFoundError, match="oracle"):
        load_judge(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="generator/"):
        load_generator(tmp_path / "empty")
    with pytest.raises(ValueError, match="greedy or diverse-beam"):
        DecodingConfig(method="sampling")
    with pytest.raises(ValueError, match="divisible"):
        DecodingConfig(method="diverse-beam", num_beams=3, num_beam_groups=2)


# -- end to end ---------------------------------------------------------------------------------


def test_same_generator_ties_everywhere(generators):
    generator = load_generator(generators[0])
    items = contexts_from_spec("synthetic:3:0")
    decoding = DecodingConfig(max_new_tokens=5)
    report = evaluate_generators(generator, generator, items, OracleJudge(), decoding)
    assert report["paired"]["win_rate"]["rate"] == 0.5
    assert report["paired"]["win_rate"]["ties"] == 3
    assert report["paired"]["utility_difference"]["mean"] == 0.0
    assert report["base"] == report["calibrated"]


@pytest.mark.parametrize("method", ["greedy", "diverse-beam"])
def test_cli_evaluate_generator_writes_json_and_markdown(tmp_path, generators, method, capsys):
    base, run = generators
    contexts = tmp_path / "contexts.jsonl"
    contexts.write_text(
        json.dumps({"id": "a", "context": "I failed my exam.", "gold": "That sounds hard."})
        + "\n"
        + json.dumps({"id": "b", "context": ["My dog died.", "I miss him."], "gold": None})
        + "\n"
        + json.dumps({"id": "c", "context": "I lost my job.", "gold": "I'm so sorry."})
        + "\n"
    )
    parser = argparse.ArgumentParser()
    make_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "eval"
    args = parser.parse_args(
        [
            "evaluate-generator",
            "--base", str(base),
            "--calibrated", str(run),
            "--contexts", str(contexts),
            "--judge", "oracle",
            "--output", str(out),
            "--decoding", method,
            "--max-new-tokens", "6",
            "--num-beams", "2",
            "--num-beam-groups", "2",
            "--examples", "2",
        ]
    )  # fmt: skip
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "win rate" in printed and "| utility | ↑ |" in printed

    report = json.loads((out / "eval.json").read_text())
    assert (
        (out / "eval.md").read_text().startswith("Generator evaluation: 3 contexts (2 with gold)")
    )
    assert report["n"] == 3 and report["n_with_gold"] == 2
    assert report["decoding"]["method"] == method
    assert report["generators"] == {"base": str(base), "calibrated": str(run)}
    for side in ("base", "calibrated"):
        metrics = report[side]
        assert set(metrics) == {
            "utility", "gold_perplexity", "bleu", "rouge_l", "distinct_1", "distinct_2",
            "mean_length",
        }  # fmt: skip
        assert metrics["gold_perplexity"] > 1 and metrics["mean_length"] <= 6
        assert metrics["utility"]["low"] <= metrics["utility"]["mean"] <= metrics["utility"]["high"]
    w = report["paired"]["win_rate"]
    assert w["wins"] + w["ties"] + w["losses"] == 3
    assert report["higher_is_better"]["gold_perplexity"] is False
    assert report["higher_is_better"]["mean_length"] is None
    assert len(report["examples"]) == 2 and len(report["items"]) == 3
    item_b = report["items"][1]
    assert item_b["gold"] is None and item_b["base_gold_nll"] is None  # nan -> null
    diffs = [i["calibrated_utility"] - i["base_utility"] for i in report["items"]]
    assert report["paired"]["utility_difference"]["mean"] == pytest.approx(np.mean(diffs))
