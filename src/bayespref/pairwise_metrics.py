"""Evaluation of pairwise preference predictions against several votes per pair (METHOD
section 9), in the style of :mod:`bayespref.metrics`: one function per metric, one registry
with ``higher_is_better``.

Shapes: ``N`` pairs, ``K`` outcomes (3: A, B, tie; or 2: A, B when the model has no ties).

- ``p``: the model's outcome distribution (N, K), rows summing to 1.
- ``counts``: the votes (N, 3) for A, B, tie (always three columns, as loaded).
- ``true_distribution``: the generating ``P*`` (N, 3) on synthetic pairs.

The vote share in the model's outcome space (:func:`outcome_targets`) is ``counts / n``; for
a model without ties each tie vote counts half for A and half for B (and ``P*(tie)`` is split
the same way for ``kl_true``), so a two-outcome model is scored on what it can express.
``P(A > B)`` is ``p[:, 0]``; its target is the vote share of A.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import rel_entr, xlogy
from scipy.stats import rankdata

from .data.pairwise import outcome_shares
from .metrics import PROB_FLOOR, expected_calibration_error

ECE_BINS = 10
"""Equal-width bins of ``P(A > B)`` in [0, 1] for ``ece``."""


def outcome_targets(counts: Any, num_outcomes: int) -> np.ndarray:
    """The vote share (N, K) over K outcomes (:func:`~bayespref.data.pairwise.outcome_shares`)."""
    return outcome_shares(np.asarray(counts, dtype=np.float64), ties=num_outcomes == 3)


def _check(p: Any, counts: Any) -> tuple[np.ndarray, np.ndarray]:
    p_arr = np.asarray(p, dtype=np.float64)
    counts_arr = np.asarray(counts, dtype=np.float64)
    if p_arr.ndim != 2 or p_arr.shape[1] not in (2, 3) or p_arr.shape[0] == 0:
        raise ValueError(f"p must have shape (N, 2) or (N, 3) with N >= 1, got {p_arr.shape}")
    if counts_arr.shape != (p_arr.shape[0], 3):
        raise ValueError(f"counts must have shape ({p_arr.shape[0]}, 3), got {counts_arr.shape}")
    if not np.all(np.isfinite(p_arr)) or np.any(p_arr < 0):
        raise ValueError("p must hold finite non-negative probabilities")
    if np.any(np.abs(p_arr.sum(axis=1) - 1) > 1e-4):
        raise ValueError("rows of p must sum to 1 (tolerance 1e-4)")
    if np.any(counts_arr < 0) or np.any(counts_arr.sum(axis=1) <= 0):
        raise ValueError("every pair needs at least one vote (counts >= 0, sum > 0)")
    return p_arr, counts_arr


def accuracy(p: Any, counts: Any, true_distribution: Any = None) -> float:
    """Pairwise accuracy against the majority vote: over pairs whose A and B votes differ,
    the share where the model's more likely winner (``P(A)`` vs ``P(B)``) is the one with
    more votes; an exact ``P(A) = P(B)`` scores 1/2. ``nan`` when no pair has a winner."""
    p, counts = _check(p, counts)
    decided = counts[:, 0] != counts[:, 1]
    if not decided.any():
        return math.nan
    votes_a = counts[decided, 0] > counts[decided, 1]
    model_a, model_b = p[decided, 0], p[decided, 1]
    right = np.where(model_a == model_b, 0.5, (model_a > model_b) == votes_a)
    return float(np.mean(right))


def soft_ce(p: Any, counts: Any, true_distribution: Any = None) -> float:
    """Soft cross-entropy ``-sum_k t_k log max(p_k, 1e-12)`` against the vote share ``t``,
    mean over pairs (nats)."""
    p, counts = _check(p, counts)
    t = outcome_targets(counts, p.shape[1])
    return float(np.mean(-xlogy(t, np.maximum(p, PROB_FLOOR)).sum(axis=1)))


def ece(p: Any, counts: Any, true_distribution: Any = None) -> float:
    """Calibration of ``P(A > B)``: 10 equal-width bins of ``p[:, 0]``, each bin's
    ``|mean P(A > B) - mean vote share of A|`` weighted by its share of pairs."""
    p, counts = _check(p, counts)
    share_a = outcome_targets(counts, p.shape[1])[:, 0]
    return expected_calibration_error(p[:, 0], share_a, n_bins=ECE_BINS)


def brier(p: Any, counts: Any, true_distribution: Any = None) -> float:
    """Brier score of ``P(A > B)`` against the vote share of A, ``mean (p_A - t_A)^2``."""
    p, counts = _check(p, counts)
    share_a = outcome_targets(counts, p.shape[1])[:, 0]
    return float(np.mean((p[:, 0] - share_a) ** 2))


def agreement_spearman(p: Any, counts: Any, true_distribution: Any = None) -> float:
    """Spearman correlation, over pairs with 2 or more votes, of the model's confidence
    ``|P(A) - P(B)|`` (``2 |P(A > B) - 0.5|`` without ties) with the votes' agreement, the
    share of votes for the most voted outcome. Does the model know which pairs people agree
    on? Average ranks for ties; ``nan`` below 2 such pairs or when either side is constant."""
    p, counts = _check(p, counts)
    several = counts.sum(axis=1) >= 2
    confidence = np.round(np.abs(p[several, 0] - p[several, 1]), 10)
    agreement = counts[several].max(axis=1) / counts[several].sum(axis=1)
    if confidence.size < 2 or np.all(confidence == confidence[0]):
        return math.nan
    if np.all(agreement == agreement[0]):
        return math.nan
    rank_c = rankdata(confidence) - (confidence.size + 1) / 2.0
    rank_a = rankdata(agreement) - (agreement.size + 1) / 2.0
    return float(
        np.dot(rank_c, rank_a) / math.sqrt(np.dot(rank_c, rank_c) * np.dot(rank_a, rank_a))
    )


def kl_true(p: Any, counts: Any, true_distribution: Any = None) -> float:
    """``KL(P* || p)`` (nats, mean over pairs) against the generating distribution, ``P*``
    brought to the model's outcomes (a tie split half and half for a two-outcome model)."""
    p, counts = _check(p, counts)
    if true_distribution is None:
        raise ValueError("kl_true needs the true distribution (synthetic pairs)")
    truth = outcome_shares(np.asarray(true_distribution, dtype=np.float64), p.shape[1] == 3)
    return float(np.mean(rel_entr(truth, np.maximum(p, PROB_FLOOR)).sum(axis=1)))


PairwiseMetricFn = Callable[..., float]


@dataclass(frozen=True)
class PairwiseMetric:
    """One pairwise metric: ``compute(p, counts, true_distribution=None)``, a direction, and
    whether it needs the true distribution."""

    name: str
    higher_is_better: bool
    description: str
    compute: PairwiseMetricFn
    needs_truth: bool = False


PAIRWISE_METRICS: dict[str, PairwiseMetric] = {
    m.name: m
    for m in [
        PairwiseMetric("accuracy", True, "winner vs the majority vote (decided pairs)", accuracy),
        PairwiseMetric("soft_ce", False, "soft cross-entropy against the vote share", soft_ce),
        PairwiseMetric("ece", False, "ECE of P(A > B) against the vote share of A", ece),
        PairwiseMetric("brier", False, "Brier of P(A > B) against the vote share of A", brier),
        PairwiseMetric(
            "agreement_spearman",
            True,
            "Spearman of |P(A) - P(B)| and the votes' agreement (pairs with 2+ votes)",
            agreement_spearman,
        ),
        PairwiseMetric("kl_true", False, "KL(P* || p), synthetic pairs only", kl_true, True),
    ]
}
"""All pairwise metrics by name, in reporting order."""


def compute_pairwise_metrics(
    p: Any, counts: Any, true_distribution: Any = None
) -> dict[str, float]:
    """Every applicable metric of :data:`PAIRWISE_METRICS` as Python floats (``kl_true``
    only with ``true_distribution``)."""
    return {
        name: metric.compute(p, counts, true_distribution)
        for name, metric in PAIRWISE_METRICS.items()
        if true_distribution is not None or not metric.needs_truth
    }
