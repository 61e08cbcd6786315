"""Pairwise metrics (issue 15, item 3), every value derived by hand on four pairs; the vote
share and majority of a model without ties (a tie vote is half a win each)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bayespref.data.pairwise import (
    NO_WINNER,
    majority_outcome,
    outcome_shares,
    pair_winner,
    smoothed_outcome_prior,
)
from bayespref.pairwise_metrics import PAIRWISE_METRICS, compute_pairwise_metrics

P = np.array([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.8, 0.1]])
COUNTS = np.array([[2, 1, 0], [1, 0, 1], [1, 1, 1], [0, 2, 0]])


def test_accuracy_against_the_majority_winner():
    # pair 0: A wins, model A (right); 1: A wins, model B (wrong); 2: no winner (skipped);
    # 3: B wins, model B (right)
    assert PAIRWISE_METRICS["accuracy"].compute(P, COUNTS) == pytest.approx(2 / 3)
    # an exact P(A) = P(B) on a decided pair scores one half
    equal = np.array([[0.4, 0.4, 0.2]])
    assert PAIRWISE_METRICS["accuracy"].compute(equal, [[0, 2, 0]]) == 0.5
    assert math.isnan(PAIRWISE_METRICS["accuracy"].compute(equal, [[1, 1, 0]]))


def test_soft_ce_brier_ece_by_hand():
    ln = math.log
    soft_ce = (
        -(2 / 3 * ln(0.6) + 1 / 3 * ln(0.3))
        - (0.5 * ln(0.2) + 0.5 * ln(0.3))
        - (ln(0.4) + ln(0.4) + ln(0.2)) / 3
        - ln(0.8)
    ) / 4
    metrics = compute_pairwise_metrics(P, COUNTS)
    assert metrics["soft_ce"] == pytest.approx(soft_ce)
    # P(A > B) = (.6, .2, .4, .1) against A's vote share (2/3, 1/2, 1/3, 0)
    brier = ((0.6 - 2 / 3) ** 2 + 0.3**2 + (0.4 - 1 / 3) ** 2 + 0.1**2) / 4
    assert metrics["brier"] == pytest.approx(brier)
    # four different bins of width 0.1: the mean absolute gap
    assert metrics["ece"] == pytest.approx((1 / 15 + 0.3 + 1 / 15 + 0.1) / 4)
    assert "kl_true" not in metrics


def test_agreement_spearman_by_hand():
    # confidence |P(A) - P(B)| = (.3, .3, 0, .7): ranks (2.5, 2.5, 1, 4); agreement of the
    # votes (2/3, 1/2, 1/3, 1): ranks (3, 2, 1, 4). Centred: (0, 0, -1.5, 1.5) and
    # (.5, -.5, -1.5, 1.5): 4.5 / sqrt(4.5 * 5)
    value = PAIRWISE_METRICS["agreement_spearman"].compute(P, COUNTS)
    assert value == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    one_vote = np.array([[1, 0, 0], [0, 1, 0]])
    assert math.isnan(PAIRWISE_METRICS["agreement_spearman"].compute(P[:2], one_vote))


def test_two_outcome_model_and_kl_true():
    p = np.array([[0.5, 0.5]])
    truth = np.array([[0.5, 0.3, 0.2]])  # the tie split: (0.6, 0.4)
    metrics = compute_pairwise_metrics(p, [[1, 0, 1]], truth)
    assert metrics["kl_true"] == pytest.approx(0.6 * math.log(1.2) + 0.4 * math.log(0.8))
    # the tie vote is half a win each: share of A = 3/4
    assert metrics["soft_ce"] == pytest.approx(math.log(2))
    assert metrics["brier"] == pytest.approx(0.25**2)
    three = compute_pairwise_metrics(
        np.array([[0.5, 0.3, 0.2]]), [[1, 0, 0]], truth
    )  # P = P*: KL 0
    assert three["kl_true"] == pytest.approx(0.0, abs=1e-12)


def test_vote_shares_priors_and_majorities():
    counts = np.array([[2, 1, 0], [1, 1, 2], [2, 2, 0], [2, 0, 2], [0, 1, 3]])
    np.testing.assert_allclose(outcome_shares(counts, ties=False)[1], [0.5, 0.5])
    np.testing.assert_allclose(outcome_shares(counts, ties=False)[4], [0.375, 0.625])
    # alpha = 1, two outcomes: (2 + 1) / (3 + 2), (1 + 1) / (3 + 2)
    np.testing.assert_allclose(smoothed_outcome_prior(counts, False, 1.0)[0], [0.6, 0.4])
    np.testing.assert_allclose(smoothed_outcome_prior(counts, True, 1.0)[0], [0.5, 1 / 3, 1 / 6])
    assert majority_outcome(counts, ties=True).tolist() == [0, 2, 2, 2, 2]
    assert pair_winner(counts).tolist() == [0, NO_WINNER, NO_WINNER, 0, 1]
    assert majority_outcome(counts, ties=False).tolist() == pair_winner(counts).tolist()


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match=r"counts must have shape \(4, 3\)"):
        compute_pairwise_metrics(P, COUNTS[:, :2])
    with pytest.raises(ValueError, match="at least one vote"):
        compute_pairwise_metrics(P[:1], [[0, 0, 0]])
    with pytest.raises(ValueError, match="kl_true needs the true distribution"):
        PAIRWISE_METRICS["kl_true"].compute(P, COUNTS)
