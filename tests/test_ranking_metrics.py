"""Ranking metrics (bayespref.ranking_metrics): hand-derived values on four small groups, with
ties in the scores, a group of constant utility and a group of one candidate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from bayespref.ranking_metrics import (
    BEST_OF_K,
    RANKING_METRICS,
    best_of_k,
    compute_ranking_metrics,
    pairwise_accuracy,
    rank_correlation,
    ranking_counts,
    ranking_metric_registry,
    spearman,
    split_groups,
    top1,
    top1_random,
)

# Four groups, interleaved in the input (grouping is by id, not by position):
#   A: s = [3, 2, 1],  u = [0.5, 0.1, 0.9]   three pairs, the scorer gets one right
#   B: s = [1, 1],     u = [0.0, 1.0]        the scorer ties the one pair
#   C: s = [1, 2],     u = [0.2, 0.2]        constant utility: no pair, not ranked
#   D: s = [5],        u = [-0.4]            one candidate
GROUPS = ["A", "B", "A", "C", "D", "B", "A", "C"]
SCORES = [3.0, 1.0, 2.0, 1.0, 5.0, 1.0, 1.0, 2.0]
UTILITIES = [0.5, 0.0, 0.1, 0.2, -0.4, 1.0, 0.9, 0.2]


def test_split_groups_keeps_first_appearance_and_input_order():
    split = split_groups(SCORES, UTILITIES, GROUPS)
    assert [s.tolist() for s, _ in split] == [[3, 2, 1], [1, 1], [1, 2], [5]]
    assert [u.tolist() for _, u in split] == [[0.5, 0.1, 0.9], [0, 1], [0.2, 0.2], [-0.4]]


def test_pairwise_accuracy_pools_pairs_and_counts_score_ties_half():
    # A: (0,1) s 3>2, u .5>.1 -> 1; (0,2) s 3>1, u .5<.9 -> 0; (1,2) s 2>1, u .1<.9 -> 0
    # B: s tied -> 1/2. C: u tied -> no pair. D: no pair.
    assert pairwise_accuracy(SCORES, UTILITIES, GROUPS) == pytest.approx((1 + 0.5) / (3 + 1))


def test_spearman_averages_ranked_groups_and_gives_constant_scores_zero():
    # A: centred ranks s [1, 0, -1], u [0, -1, 1]: rho = -1 / sqrt(2 * 2) = -0.5.
    # B: s constant -> 0. C (constant u) and D (one candidate) are left out.
    assert spearman(SCORES, UTILITIES, GROUPS) == pytest.approx((-0.5 + 0.0) / 2)


def test_rank_correlation_is_scipys_spearman_with_average_ranks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = rng.integers(0, 4, size=7).astype(float)  # ties on purpose
        u = rng.normal(size=7)
        if np.ptp(s) > 0:
            assert rank_correlation(s, u) == pytest.approx(spearmanr(s, u).statistic)


def test_top1_and_its_random_baseline():
    # A: top score 3 has u .5 < max .9 -> 0. B: both tied at the top, one of two is best -> 1/2.
    assert top1(SCORES, UTILITIES, GROUPS) == pytest.approx((0 + 0.5) / 2)
    # uniform pick: A 1/3 best, B 1/2 best
    assert top1_random(SCORES, UTILITIES, GROUPS) == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_best_of_k_among_the_first_k_with_ceiling_random_and_first():
    # K = 2: A first two s [3, 2] u [.5, .1]; B tie -> mean(0, 1); C .2; D -.4
    assert best_of_k(SCORES, UTILITIES, GROUPS, 2) == pytest.approx((0.5 + 0.5 + 0.2 - 0.4) / 4)
    assert best_of_k(SCORES, UTILITIES, GROUPS, 2, "_oracle") == pytest.approx(
        (0.5 + 1.0 + 0.2 - 0.4) / 4
    )
    assert best_of_k(SCORES, UTILITIES, GROUPS, 2, "_random") == pytest.approx(
        (0.3 + 0.5 + 0.2 - 0.4) / 4
    )
    assert best_of_k(SCORES, UTILITIES, GROUPS, 2, "_first") == pytest.approx(
        (0.5 + 0.0 + 0.2 - 0.4) / 4
    )
    # K = 4 covers every group: A's ceiling is now .9, its mean .5
    metrics = compute_ranking_metrics(SCORES, UTILITIES, GROUPS, ks=(4,))
    assert metrics["best_of_4"] == pytest.approx((0.5 + 0.5 + 0.2 - 0.4) / 4)
    assert metrics["best_of_4_oracle"] == pytest.approx((0.9 + 1.0 + 0.2 - 0.4) / 4)
    assert metrics["best_of_4_random"] == pytest.approx((0.5 + 0.5 + 0.2 - 0.4) / 4)
    assert metrics["best_of_4_first"] == pytest.approx((0.5 + 0.0 + 0.2 - 0.4) / 4)


def test_counts_say_what_each_metric_rests_on():
    assert ranking_counts(SCORES, UTILITIES, GROUPS, ks=(2, 4)) == {
        "candidates": 8,
        "groups": 4,
        "ranked_groups": 2,
        "single_candidate_groups": 1,
        "constant_utility_groups": 1,
        "pairs": 4,
        "score_tied_pairs": 1,
        "groups_shorter_than_2": 1,
        "groups_shorter_than_4": 4,
    }


def test_perfect_and_reversed_scorers():
    rng = np.random.default_rng(1)
    u = rng.normal(size=40)
    groups = np.repeat(np.arange(5), 8).tolist()
    perfect = compute_ranking_metrics(2 * u + 1, u, groups)
    assert perfect["pairwise_accuracy"] == 1.0
    assert perfect["spearman"] == pytest.approx(1.0)
    assert perfect["top1"] == 1.0
    for k in BEST_OF_K:
        assert perfect[f"best_of_{k}"] == pytest.approx(perfect[f"best_of_{k}_oracle"])
        assert perfect[f"best_of_{k}_random"] <= perfect[f"best_of_{k}"]
    reversed_ = compute_ranking_metrics(-u, u, groups)
    assert reversed_["pairwise_accuracy"] == 0.0
    assert reversed_["spearman"] == pytest.approx(-1.0)
    assert reversed_["top1"] == 0.0
    constant = compute_ranking_metrics(np.zeros(40), u, groups)
    assert constant["pairwise_accuracy"] == 0.5
    assert constant["spearman"] == 0.0
    assert constant["best_of_8"] == pytest.approx(constant["best_of_8_random"])


def test_nothing_to_rank_gives_nan_not_an_error():
    metrics = compute_ranking_metrics([1.0, 2.0], [0.3, 0.3], ["a", "b"])
    assert np.isnan(metrics["pairwise_accuracy"]) and np.isnan(metrics["spearman"])
    assert np.isnan(metrics["top1"])
    assert metrics["best_of_4"] == pytest.approx(0.3)


def test_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    assert pairwise_accuracy(
        torch.tensor(SCORES), torch.tensor(UTILITIES), GROUPS
    ) == pytest.approx(0.375)


@pytest.mark.parametrize(
    ("scores", "utilities", "groups", "match"),
    [
        ([1.0, 2.0], [0.0], ["a", "a"], "one entry per candidate"),
        ([1.0, float("nan")], [0.0, 1.0], ["a", "a"], "non-finite"),
        ([], [], [], "non-empty"),
    ],
)
def test_bad_inputs_are_value_errors(scores, utilities, groups, match):
    with pytest.raises(ValueError, match=match):
        compute_ranking_metrics(scores, utilities, groups)


def test_registry_declares_directions():
    assert RANKING_METRICS["pairwise_accuracy"].higher_is_better is True
    assert RANKING_METRICS["best_of_16"].higher_is_better is True
    for reference in ("top1_random", "best_of_8_oracle", "best_of_8_random", "best_of_8_first"):
        assert RANKING_METRICS[reference].higher_is_better is None
    assert list(ranking_metric_registry((3,))) == [
        "pairwise_accuracy",
        "spearman",
        "top1",
        "top1_random",
        "best_of_3",
        "best_of_3_oracle",
        "best_of_3_random",
        "best_of_3_first",
    ]
    with pytest.raises(ValueError, match="k must be"):
        best_of_k(SCORES, UTILITIES, GROUPS, 0)
