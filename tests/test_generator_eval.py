"""evaluate-generator: hand-derived metrics, gold perplexity against a manual forward pass,
context files, judges, tiny end-to-end runs through the command line (flags, a YAML config
with overrides), and the config's errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bayespref.cli.generator_eval import REMOVED_FLAGS, SHORTCUTS, make_parser
from bayespref.config import ConfigError, DecodingConfig, load_yaml
from bayespref.data.contexts import contexts_from_spec, read_context_jsonl
from bayespref.data.schema import DataError
from bayespref.decoding import ANSWER_DECODING, answer_decoding, decode
from bayespref.generator_eval import (
    GENERATOR_METRICS,
    GeneratorEvalConfig,
    corpus_bleu,
    distinct_n,
    evaluate_generators,
    gold_examples,
    json_safe,
    perplexity,
    rouge_l_f,
)
from bayespref.judges import OracleJudge, PreferenceModelJudge, load_judge
from bayespref.lm import chat_messages, gold_nll, load_generator
from bayespref.testing import save_tiny_llama

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
    decoding = answer_decoding(max_new_tokens=6, batch_size=2)
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
    with pytest.raises(ConfigError, match="greedy|diverse-beam"):
        answer_decoding(method="sampling")
    with pytest.raises(ConfigError, match="divisible"):
        answer_decoding(method="diverse-beam", num_beams=3, num_beam_groups=2)


# -- end to end ---------------------------------------------------------------------------------


def test_same_generator_ties_everywhere(generators):
    generator = load_generator(generators[0])
    items = contexts_from_spec("synthetic:3:0")
    decoding = answer_decoding(max_new_tokens=5)
    report = evaluate_generators(generator, generator, items, OracleJudge(), decoding)
    assert report["paired"]["win_rate"]["rate"] == 0.5
    assert report["paired"]["win_rate"]["ties"] == 3
    assert report["paired"]["utility_difference"]["mean"] == 0.0
    assert report["base"] == report["calibrated"]


def write_contexts(folder) -> str:
    """Three contexts, two with a gold reply, one of two turns."""
    path = folder / "contexts.jsonl"
    path.write_text(
        json.dumps({"id": "a", "context": "I failed my exam.", "gold": "That sounds hard."})
        + "\n"
        + json.dumps({"id": "b", "context": ["My dog died.", "I miss him."], "gold": None})
        + "\n"
        + json.dumps({"id": "c", "context": "I lost my job.", "gold": "I'm so sorry."})
        + "\n"
    )
    return str(path)


def run_cli(argv: list[str]) -> int:
    """``bayespref evaluate-generator ARGV`` through the command's own parser and handler."""
    parser = argparse.ArgumentParser()
    make_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["evaluate-generator", *argv])
    return args.func(args)


def check_report(out, method: str, base, run) -> dict:
    """What every run on :func:`write_contexts` must write (max_new_tokens 6, 2 examples)."""
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
    return report


@pytest.mark.parametrize("method", ["greedy", "diverse-beam"])
def test_cli_evaluate_generator_writes_json_and_markdown(tmp_path, generators, method, capsys):
    """The flags kept as shortcuts, plus key=value overrides for the rest."""
    base, run = generators
    out = tmp_path / "eval"
    code = run_cli(
        [
            "--base", str(base),
            "--calibrated", str(run),
            "--contexts", write_contexts(tmp_path),
            "--judge", "oracle",
            "--output", str(out),
            "--decoding", method,
            "--max-new-tokens", "6",
            "decoding.num_beams=2",
            "decoding.num_beam_groups=2",
            "num_examples=2",
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "win rate" in printed and "| utility | ↑ |" in printed
    report = check_report(out, method, base, run)
    assert report["chat_template"] is True and report["decoding"]["min_new_tokens"] == 0


def test_cli_yaml_config_with_overrides_and_a_shortcut(tmp_path, generators, capsys):
    """A config file, a key=value override and a flag shortcut, each taking effect."""
    base, run = generators
    config = tmp_path / "evaluate-generator.yaml"
    config.write_text(
        f"base: {base}\n"
        f"calibrated: {run}\n"
        f"contexts: {write_contexts(tmp_path)}\n"
        "judge: oracle\n"
        "num_examples: 2\n"
        "decoding:\n"
        "  method: diverse-beam\n"
        "  num_beams: 2\n"
        "  num_beam_groups: 2\n"
        "  max_new_tokens: 30\n"
    )
    out = tmp_path / "out"
    # --max-new-tokens overrides the file's 30; decoding.seed=3 the default seed
    code = run_cli(
        ["--config", str(config), "--max-new-tokens", "6", f"output={out}", "decoding.seed=3"]
    )
    assert code == 0
    report = check_report(out, "diverse-beam", base, run)
    assert report["decoding"]["max_new_tokens"] == 6 and report["decoding"]["seed"] == 3
    assert report["decoding"]["min_new_tokens"] == 0  # the answer default, kept by the file
    assert report["contexts"] == str(tmp_path / "contexts.jsonl")


def test_the_calibrated_run_holds_the_report_by_default(tmp_path, generators, monkeypatch):
    base, run = generators
    monkeypatch.chdir(tmp_path)
    config = load_yaml(
        GeneratorEvalConfig,
        None,
        [f"base={base}", f"calibrated={run}", "contexts=x", "judge=oracle"],
    )
    assert config.report_dir == run / "eval"
    config = load_yaml(
        GeneratorEvalConfig,
        None,
        [f"base={base}", f"calibrated={base}", "contexts=x", "judge=oracle"],
    )
    assert str(config.report_dir) == "eval-generator"


def test_config_errors_name_the_key(tmp_path):
    required = ["base=b", "calibrated=c", "contexts=synthetic:3:0", "judge=oracle"]
    config = load_yaml(GeneratorEvalConfig, None, required)
    assert dataclasses.asdict(config.decoding) == dataclasses.asdict(
        DecodingConfig(**ANSWER_DECODING)
    )
    assert config.decoding.method == "greedy" and config.decoding.max_new_tokens == 40
    assert config.chat_template is True and config.num_examples == 5

    with pytest.raises(ConfigError, match="num_beam"):  # a typo in a section, named
        load_yaml(GeneratorEvalConfig, None, [*required, "decoding.num_beam=4"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: b\ncalibrated: c\ncontexts: x\njudge: oracle\nexamples: 2\n")
    with pytest.raises(ConfigError, match="examples"):
        load_yaml(GeneratorEvalConfig, bad)
    with pytest.raises(ConfigError, match="calibrated, judge"):
        load_yaml(GeneratorEvalConfig, None, ["base=b", "contexts=x"])
    with pytest.raises(ConfigError, match="rule"):
        load_yaml(GeneratorEvalConfig, None, [*required, "rule=best"])
    with pytest.raises(ConfigError, match="decoding.method"):
        load_yaml(GeneratorEvalConfig, None, [*required, "decoding.method=sampling"])
    with pytest.raises(ConfigError, match="limit"):
        load_yaml(GeneratorEvalConfig, None, [*required, "limit=0"])


def test_removed_flags_name_their_override_and_shortcuts_name_real_keys():
    with pytest.raises(ConfigError, match=r"--num-beams .*decoding\.num_beams="):
        run_cli(["--num-beams", "4"])
    with pytest.raises(ConfigError, match="chat_template=false"):
        run_cli(["--no-chat-template"])
    keys = {f.name for f in dataclasses.fields(GeneratorEvalConfig)}
    decoding_keys = {f.name for f in dataclasses.fields(DecodingConfig)}
    for key in [*SHORTCUTS.values(), *(r.split("=")[0] for r in REMOVED_FLAGS.values())]:
        section, _, name = key.partition(".")
        assert (name in decoding_keys) if name else (section in keys), key


def test_shipped_config_parses():
    path = Path(__file__).resolve().parents[1] / "configs" / "evaluate-generator.yaml"
    config = load_yaml(GeneratorEvalConfig, path)
    assert config.base == "smollm2-135m-instruct" and config.judge == "oracle"
    assert config.contexts.startswith("synthetic:")
    assert config.decoding == DecodingConfig(**ANSWER_DECODING)


def test_json_safe_writes_nan_as_null():
    assert json_safe({"a": [math.nan, np.float32(1.5), (math.inf, 2)]}) == {
        "a": [None, 1.5, [None, 2]]
    }


def write_candidate_file(folder: Path, scorer_run: str | None) -> Path:
    """Two candidate sets in the candidate-file format; the file's PM ties two of set b."""
    rows = [
        {"id": "a", "context": "I failed my exam.", "gold": None, "candidates": [
            {"text": "I'm so sorry, that sounds hard.", "score": 0.9, "count": 1},
            {"text": "Exams happen.", "score": 0.2, "count": 2},
            {"text": "whatever", "score": -0.5, "count": 1},
        ], "num_generated": 4, "num_unique": 3},
        {"id": "b", "context": ["My dog died.", "I miss him."], "gold": None, "candidates": [
            {"text": "That must hurt a lot.", "score": 0.4, "count": 1},
            {"text": "Dogs are nice.", "score": 0.4, "count": 1},
        ], "num_generated": 2, "num_unique": 2},
    ]  # fmt: skip
    path = folder / "sets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {"settings": {"scorer": {"run": scorer_run}}, "complete": True}
    (folder / "sets.meta.json").write_text(json.dumps(meta))
    return path


def test_cli_reports_each_generators_own_ranking_of_candidate_sets(tmp_path, generators):
    from bayespref.calibration import CalibrationLossConfig, generator_ranking_accuracy
    from bayespref.calibration.ranking import generator_candidate_scores

    base, run = generators
    sets = write_candidate_file(tmp_path, scorer_run="runs/pm")
    out = tmp_path / "eval"
    code = run_cli(
        ["--base", str(base), "--calibrated", str(run), "--contexts", write_contexts(tmp_path),
         "--judge", "oracle", "--output", str(out), "--max-new-tokens", "4",
         f"candidates={sets}", "length_penalty=0.5"]
    )  # fmt: skip
    assert code == 0
    ranking = json.loads((out / "eval.json").read_text())["ranking"]
    # set a: 3 pairs; set b: its one pair is a PM tie, left out (the oracle tells them apart)
    assert ranking["sets"] == 2 and ranking["candidates"] == 5 and ranking["pairs"]["pm"] == 3
    assert ranking["pairs"]["judge"] == 4 and ranking["file"] == str(sets)
    assert "| pm ↑ | 3 |" in (out / "eval.md").read_text()

    # each generator's value, recomputed by hand from its own scores (a = 0.5)
    rows = [json.loads(line) for line in sets.read_text().splitlines()]
    pm = [c["score"] for r in rows for c in r["candidates"]]
    oracle = OracleJudge().utilities(
        [r["context"] for r in rows for _ in r["candidates"]],
        [c["text"] for r in rows for c in r["candidates"]],
    )
    groups = [r["id"] for r in rows for _ in r["candidates"]]
    for side, spec in (("base", base), ("calibrated", run)):
        generator = load_generator(spec)
        scores = generator_candidate_scores(
            generator.model,
            [generator.prompt_ids(r["context"]) for r in rows],
            [[generator.target_ids(c["text"]) for c in r["candidates"]] for r in rows],
            CalibrationLossConfig(length_penalty=0.5),
            generator.pad_token_id,
        )
        got = ranking[side]
        assert got["rank_acc_pm"] == pytest.approx(generator_ranking_accuracy(scores, pm, groups))
        assert got["rank_acc_judge"] == pytest.approx(
            generator_ranking_accuracy(scores, oracle, groups)
        )

    # a file ranked by beam score (no PM): only the judge is a reference
    sets = write_candidate_file(tmp_path, scorer_run=None)
    run_cli(
        ["--base", str(base), "--calibrated", str(run), "--contexts", write_contexts(tmp_path),
         "--judge", "oracle", "--output", str(out), "--max-new-tokens", "4", f"candidates={sets}"]
    )  # fmt: skip
    ranking = json.loads((out / "eval.json").read_text())["ranking"]
    assert set(ranking["pairs"]) == {"judge"} and set(ranking["base"]) == {"rank_acc_judge"}
    with pytest.raises(ConfigError, match="length_penalty must be >= 0"):
        load_yaml(
            GeneratorEvalConfig,
            None,
            [
                f"base={base}",
                f"calibrated={run}",
                "contexts=x",
                "judge=oracle",
                "length_penalty=-1",
            ],
        )
