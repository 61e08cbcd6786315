"""Per-item label distributions from annotation counts (METHOD section 1).

All functions take ``counts`` of shape (N, C) and return arrays of the same leading shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .schema import TIE_RULES


def smoothed_prior(counts: np.ndarray, alpha: float = 0.1) -> np.ndarray:
    """``p_i(l) = (count_i(l) + alpha) / (n_i + C * alpha)``, shape (N, C).

    With ``alpha = 0`` this is the empirical distribution. Rows with no annotation and
    ``alpha = 0`` have no prior and raise ``ValueError``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    num_classes = counts.shape[-1]
    total = counts.sum(axis=-1, keepdims=True) + num_classes * alpha
    if np.any(total <= 0):
        raise ValueError("an item with no annotations has no prior when alpha = 0")
    return (counts + alpha) / total


def empirical_distribution(counts: np.ndarray) -> np.ndarray:
    """Unsmoothed ``t_i(l) = count_i(l) / n_i``, shape (N, C); used for evaluation."""
    return smoothed_prior(counts, alpha=0.0)


def majority_label(
    counts: np.ndarray,
    utilities: Sequence[float] | None = None,
    tie_break: str = "less-preferred",
) -> np.ndarray:
    """``argmax_l count_i(l)`` with ties broken by ``tie_break``, shape (N,) int64.

    ``less-preferred`` picks, among the tied classes, the one with the lowest utility
    (equal utilities fall back to the lowest index); ``more-preferred`` the highest utility;
    ``first`` and ``last`` the lowest and highest class index.
    """
    if tie_break not in TIE_RULES:
        raise ValueError(f"tie_break must be one of {TIE_RULES}, got {tie_break!r}")
    counts = np.asarray(counts)
    num_classes = counts.shape[-1]
    utility_values = np.asarray(  # (C,)
        np.arange(num_classes) if utilities is None else utilities, dtype=np.float64
    )
    is_top = counts == counts.max(axis=-1, keepdims=True)  # (N, C)
    index = np.arange(num_classes)
    if tie_break == "first":
        key = -index.astype(np.float64)
    elif tie_break == "last":
        key = index.astype(np.float64)
    else:
        # Rank classes by utility, ties in utility resolved toward the lower index.
        by_utility = utility_values if tie_break == "less-preferred" else -utility_values
        order = np.lexsort((index, by_utility))
        rank = np.empty(num_classes, dtype=np.float64)
        rank[order] = np.arange(num_classes)
        key = -rank
    scored = np.where(is_top, key[None, :], -np.inf)
    return scored.argmax(axis=-1).astype(np.int64)
