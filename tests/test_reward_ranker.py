"""A reward-model run ranks responses wherever a preference-model run does (issue 15 item 5):
:func:`bayespref.reward_model.load_ranker` loads either; calibration's scorer ranks the
candidates by the reward, and ``make_reward_function`` returns the reward."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bayespref.calibration import build_candidates, read_candidates
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
