"""Reward models (issue 15, item 2): Rao-Kupper outcome probabilities and margin BT by hand;
the registry losses on outcome logits (majority = TRL's BT, soft BT, d-PM with a one-hot
prior = cross-entropy); save/load and save_pretrained round trips keep theta."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bayespref.config import ModelConfig
from bayespref.data.schema import LabelSpace
from bayespref.hf_export import EXACT_TOL
from bayespref.losses import LOSSES
from bayespref.pairwise_losses import NO_WINNER, PAIRWISE_LOSSES, margin_bt, outcome_log_probs
from bayespref.reward_model import RewardModel, outcome_space

pytestmark = pytest.mark.usefixtures("one_thread")


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_rao_kupper_outcomes_by_hand():
    # d = 1, theta = 0.5: P(A) = sigmoid(0.5), P(B) = sigmoid(-1.5), P(tie) = the rest
    p = outcome_log_probs(torch.tensor([1.0, 0.0]), 0.5).exp()
    expected_a, expected_b = 0.6224593312, 0.1824255238
    assert sigmoid(0.5) == pytest.approx(expected_a) and sigmoid(-1.5) == pytest.approx(expected_b)
    np.testing.assert_allclose(
        p[0].numpy(), [expected_a, expected_b, 1 - expected_a - expected_b], atol=1e-6
    )
    # d = 0: symmetric, tie = 1 - 2 sigmoid(-0.5) = 0.2449186624
    np.testing.assert_allclose(p[1].numpy(), [0.3775406688, 0.3775406688, 0.2449186624], atol=1e-6)
    # far apart: finite, the tie mass vanishes; theta -> 0: no ties (log P(tie) = -inf)
    far = outcome_log_probs(torch.tensor([60.0, -60.0]), 0.5)
    assert torch.isfinite(far[:, :2]).all() and far.exp().sum(1).sub(1).abs().max() < 1e-6
    assert outcome_log_probs(torch.tensor([0.3]), 0.0)[0, 2] == -math.inf


def test_bradley_terry_without_ties_by_hand():
    p = outcome_log_probs(torch.tensor([0.0, math.log(3.0)]), None).exp()
    np.testing.assert_allclose(p.numpy(), [[0.5, 0.5], [0.75, 0.25]], atol=1e-7)


def test_margin_bt_by_hand():
    d = torch.tensor([2.0, 2.0, 2.0, 0.5], requires_grad=True)
    winner = torch.tensor([0, 1, 0, NO_WINNER])
    loss = margin_bt(d, winner, torch.tensor([1.0, 0.0, 0.0, 3.0]))
    # -log sigmoid(2 - 1) = log(1 + e^-1); -log sigmoid(-2) = log(1 + e^2); log(1 + e^-2); 0
    expected = [math.log1p(math.exp(-1)), math.log1p(math.exp(2)), math.log1p(math.exp(-2)), 0]
    np.testing.assert_allclose(loss.detach().numpy(), expected, atol=1e-6)
    loss.sum().backward()
    assert d.grad is not None and d.grad[3] == 0  # a pair without a winner gives no gradient
    assert d.grad[0] == pytest.approx(-(1 - sigmoid(1.0)))  # d/dd -log sigmoid(d - 1)
    assert PAIRWISE_LOSSES["margin"] is margin_bt
    # without a margin it is majority BT (TRL's loss)
    plain = margin_bt(torch.tensor([0.7]), torch.tensor([0]))
    assert float(plain) == pytest.approx(math.log1p(math.exp(-0.7)))


def test_registry_losses_apply_to_outcome_logits():
    d = torch.tensor([0.7, 0.0])
    logits = outcome_log_probs(d, None)  # (2, 2)
    one_hot = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    majority = LOSSES["majority"](logits, one_hot, labels=torch.tensor([0, 0]))
    np.testing.assert_allclose(
        majority.numpy(), [math.log1p(math.exp(-0.7)), math.log(2)], atol=1e-6
    )
    # soft BT, d = 0 (q = 1/2, 1/2) against the vote share (3/4, 1/4): KL = 0.130812
    share = torch.tensor([[0.75, 0.25]])
    soft = LOSSES["soft"](outcome_log_probs(torch.tensor([0.0]), None), share)
    assert float(soft) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    # d-PM forward KL with a one-hot prior is the cross-entropy, whatever the batch marginal
    rk = outcome_log_probs(torch.tensor([1.0, -0.5, 0.2]), 0.4)  # (3, 3)
    prior = torch.eye(3)
    for detach in (False, True):
        dpm = LOSSES["forward-kl"](rk, prior, normaliser="batch", detach_target=detach)
        np.testing.assert_allclose(dpm.numpy(), -rk.diagonal().numpy(), atol=1e-5)


@pytest.fixture
def reward_model(tiny_encoder_dir) -> RewardModel:
    torch.manual_seed(0)
    config = ModelConfig(encoder=tiny_encoder_dir, max_length=48, head_hidden=8)
    return RewardModel.build(config, ties=True).eval()


CONTEXTS = ["I failed my exam.", None, ["My dog died.", "I miss him."]]
A = ["That sounds hard. How are you?", "A reply.", "I'm so sorry."]
B = ["Study more.", "Another reply.", "Get a new dog."]


def test_reward_model_pairs_and_theta(reward_model):
    assert reward_model.label_space == outcome_space(True)
    assert float(reward_model.theta.detach()) == pytest.approx(math.log(2))
    rewards_a = reward_model.score(CONTEXTS, A)
    rewards_b = reward_model.score(CONTEXTS, B)
    p = reward_model.predict_pairs(CONTEXTS, A, B)
    assert p.shape == (3, 3)
    expected = outcome_log_probs(torch.tensor(rewards_a - rewards_b), math.log(2)).exp()
    np.testing.assert_allclose(p, expected.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="label space is the outcomes"):
        RewardModel(
            reward_model.encoder,
            reward_model.tokenizer,
            LabelSpace(names=("bad", "good"), utilities=(0.0, 1.0)),
            reward_model.config,
        )


@pytest.mark.parametrize("freeze", [False, True])
def test_save_and_load_keep_rewards_and_theta(reward_model, tmp_path, freeze, tiny_encoder_dir):
    if freeze:
        config = ModelConfig(
            encoder=tiny_encoder_dir, max_length=48, head_hidden=8, freeze_encoder=True
        )
        torch.manual_seed(0)
        reward_model = RewardModel.build(config, ties=True).eval()
    with torch.no_grad():
        reward_model.tie_logit.fill_(-0.3)
    reward_model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "reward_model.json").read_text())
    assert meta["weights"] == ("head" if freeze else "all")
    again = RewardModel.from_run(tmp_path / "m")
    assert float(again.tie_logit) == pytest.approx(-0.3)
    np.testing.assert_allclose(again.score(CONTEXTS, A), reward_model.score(CONTEXTS, A), atol=1e-6)


def test_save_pretrained_writes_one_label_and_theta(reward_model, tmp_path):
    with torch.no_grad():
        reward_model.tie_logit.fill_(0.25)
    reward_model.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"] == {"0": "reward"} and config["label_utilities"] == []
    assert config["bayespref"]["state"] == {"tie_logit": 0.25}
    again = RewardModel.from_pretrained(tmp_path / "hf")
    assert again.ties and float(again.tie_logit) == pytest.approx(0.25)
    np.testing.assert_allclose(
        again.score(CONTEXTS, A), reward_model.score(CONTEXTS, A), atol=EXACT_TOL, rtol=0
    )


def test_reward_model_without_ties(tiny_encoder_dir):
    config = ModelConfig(encoder=tiny_encoder_dir, max_length=48)
    model = RewardModel.build(config, ties=False)
    assert model.tie_logit is None and model.theta is None
    assert model.predict_pairs(CONTEXTS, A, B).shape == (3, 2)
    assert model.export_state() == {}
