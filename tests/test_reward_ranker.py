"""A reward-model run ranks responses wherever a preference-model run does (issue 15 item 5):
:func:`bayespref.reward_model.load_ranker` loads either; calibration's scorer ranks the
candidates by the reward, and ``make_reward_function`` returns the reward. ``score`` reads
pairs (A vs B) with a reward run, and single responses as before."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bayespref.calibration import build_candidates, read_candidates
from bayespref.cli import main
from bayespref.config.pairwise import load_pairwise_config
from bayespref.export import make_reward_function
from bayespref.model import PreferenceModel
from bayespref.reward_model import REWARD_META, RewardModel, load_ranker, ranker_model_dir
from bayespref.train_pairwise import train_pairwise
from test_calibration import tiny_calibration
from test_train_pairwise import overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, tiny_encoder_dir) -> str:
    """A tiny reward model with ties, trained for two steps on synthetic pairs."""
    out = tmp_path_factory.mktemp("rm")
    config = load_pairwise_config(None, overrides(tiny_encoder_dir, out, "name=rm"))
    return str(train_pairwise(config).run_dir)


def test_load_ranker_tells_a_reward_run_from_a_preference_run(reward_run, pm_run, tmp_path):
    ranker = load_ranker(reward_run)
    assert isinstance(ranker, RewardModel) and ranker.ties
    assert (ranker_model_dir(reward_run) / REWARD_META).is_file()
    assert type(load_ranker(pm_run)) is PreferenceModel
    assert isinstance(load_ranker(reward_run, checkpoint="last"), RewardModel)
    # the reward is the ranking under either rule; an unknown rule is still an error
    contexts, responses = ["I failed my exam."] * 2, ["I'm sorry.", "whatever"]
    rewards = ranker.score(contexts, responses)
    np.testing.assert_allclose(ranker.score(contexts, responses, rule="worst-class"), rewards)
    with pytest.raises(ValueError, match="score rule must be"):
        ranker.score(contexts, responses, rule="best-class")
    with pytest.raises(FileNotFoundError, match="no such run directory"):
        load_ranker(tmp_path / "missing")


def test_a_reward_run_ranks_calibration_candidates(tmp_path, char_generator_dir, reward_run):
    config = tiny_calibration(tmp_path, char_generator_dir, reward_run)
    meta, rows = read_candidates(build_candidates(config))
    assert meta["complete"] and len(rows) == 8
    model = RewardModel.from_run(reward_run)
    for row in rows:
        texts = [c["text"] for c in row["candidates"]]
        scores = [c["score"] for c in row["candidates"]]
        assert scores == sorted(scores, reverse=True)
        expected = model.score([row["context"]] * len(texts), texts)
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)


def test_a_reward_run_gives_a_reward_function(reward_run):
    reward = make_reward_function(Path(reward_run), batch_size=2)
    assert reward.__name__ == "reward_model"
    prompts = ["I failed my exam.", "I lost my job."]
    completions = ["I'm so sorry.", "whatever"]
    rewards = reward(prompts, completions, completion_ids=[[1], [2]])
    assert all(type(r) is float for r in rewards)
    expected = RewardModel.from_run(reward_run).score(prompts, completions)
    np.testing.assert_allclose(rewards, expected, rtol=1e-5, atol=1e-6)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_score_reads_pairs_with_a_reward_run(reward_run, pm_run, tmp_path, capsys):
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "id": "p1",
                "context": ["I failed my exam."],
                "response_a": "Sorry.",
                "response_b": "Ha.",
            },
            {
                "context": "Hi",
                "response_a": "Hello!",
                "response_b": "Go away.",
                "votes": {"A": 1, "B": 2},
            },
            {"prompt": "I lost my job.", "chosen": "That is hard.", "rejected": "Good."},
        ],
    )
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--run", reward_run, "--input", str(pairs), "--output", str(out)]) == 0
    assert "scored 3 pairs (A vs B)" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p1", "pairs.jsonl:2", "pairs.jsonl:3"]
    assert rows[1]["votes"] == {"A": 1, "B": 2} and rows[2]["chosen"] == "That is hard."
    model = RewardModel.from_run(reward_run)
    contexts = [["I failed my exam."], ["Hi"], ["I lost my job."]]
    a, b = ["Sorry.", "Hello!", "That is hard."], ["Ha.", "Go away.", "Good."]
    expected = model.predict_pairs(contexts, a, b)
    for row, want, ra, rb in zip(
        rows, expected, model.score(contexts, a), model.score(contexts, b)
    ):
        assert list(row["probs"]) == ["A", "B", "tie"]
        np.testing.assert_allclose(list(row["probs"].values()), want, rtol=1e-5, atol=1e-7)
        assert sum(row["probs"].values()) == pytest.approx(1.0)
        assert row["reward_a"] == pytest.approx(ra, rel=1e-5, abs=1e-6)
        assert row["reward_b"] == pytest.approx(rb, rel=1e-5, abs=1e-6)

    # a preference-model run scores single responses only: one line, exit 2
    args = ["score", "--run", pm_run, "--pairs", "--input", str(pairs), "--output", str(out)]
    assert main(args) == 2
    assert "is a preference-model run: pairs (A vs B) need a reward-model run" in (
        capsys.readouterr().err
    )
    # single responses keep their format
    single = write_jsonl(tmp_path / "single.jsonl", [{"context": "Hi", "response": "Hello!"}])
    assert main(["score", "--run", pm_run, "--input", str(single), "--output", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert {"probs", "score", "expected_utility", "worst_class_prob"} <= set(row)
