"""Perspectivist metrics (METHOD section 8, LeWiDi 2025) and the Wasserstein distance of the
crowd distribution, in the style of :mod:`bayespref.metrics`: per-annotation (or per-item)
values, an aggregation (the mean), and a direction in :data:`ANNOTATOR_METRICS`.

Shapes: ``M`` annotations (one per observed (item, annotator, label) triple), ``N`` items,
``C`` classes.

- ``annotator_error``: the error rate of the per-annotator prediction ``argmax q_a(. | x_i)``
  against that annotator's label (the categorical task).
- ``annotator_distance``: the mean absolute distance ``|rank(argmax q_a) - rank(label)|``
  between the predicted and the given class on the ordinal scale (ordinal label spaces only).
- ``annotator_error_majority``, ``annotator_distance_majority``: the same for the baseline
  that gives every annotator the item's majority label.
- ``wasserstein``: ``W1(t, q) = sum_k |F_t(k) - F_q(k)|`` over the classes in ordinal order
  (``F`` the cumulative distributions, adjacent classes 1 apart; the last term is 0), ordinal
  label spaces only; mean over items.

A label space is *ordinal* here when its utilities are all different: they order the classes
(:func:`class_ranks`, rank 0 = the lowest utility). ``argmax`` takes the first (lowest
index) class on ties, as numpy does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ANNOTATOR_METRICS",
    "AnnotatorMetric",
    "annotator_distance_per_annotation",
    "annotator_error_per_annotation",
    "class_ranks",
    "perspectivist_metrics",
    "wasserstein_per_item",
]


@dataclass(frozen=True)
class AnnotatorMetric:
    """A metric's name, direction and meaning (``higher_is_better`` as in
    :class:`bayespref.metrics.Metric`); ``ordinal``: only for ordinal label spaces."""

    name: str
    higher_is_better: bool
    description: str
    ordinal: bool = False


ANNOTATOR_METRICS: dict[str, AnnotatorMetric] = {
    m.name: m
    for m in [
        AnnotatorMetric(
            "annotator_error", False, "error rate of argmax q_a against annotator a's label"
        ),
        AnnotatorMetric(
            "annotator_error_majority",
            False,
            "baseline: error rate of the item's majority label against each annotator's label",
        ),
        AnnotatorMetric(
            "annotator_distance",
            False,
            "mean |rank(argmax q_a) - rank(label of a)| on the ordinal scale",
            ordinal=True,
        ),
        AnnotatorMetric(
            "annotator_distance_majority",
            False,
            "baseline: mean |rank(majority) - rank(label of a)| on the ordinal scale",
            ordinal=True,
        ),
        AnnotatorMetric(
            "wasserstein",
            False,
            "W1(t, q) = sum_k |F_t(k) - F_q(k)| over classes in utility order",
            ordinal=True,
        ),
    ]
}
"""The perspectivist metrics and ``wasserstein`` by name, in reporting order."""


def class_ranks(utilities: Sequence[float]) -> np.ndarray | None:
    """(C,) int rank of each class on the ordinal scale (0 = lowest utility), or None when
    two classes share a utility (the classes are then not ordered)."""
    values = np.asarray(utilities, dtype=np.float64)
    if len(np.unique(values)) != len(values):
        return None
    ranks = np.empty(len(values), dtype=np.int64)
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def _labels(labels, num_rows: int, num_classes: int, name: str) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.shape != (num_rows,):
        raise ValueError(f"{name} must have shape ({num_rows},), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{name} must be class indices in 0..{num_classes - 1}")
    return arr.astype(np.int64)


def _predictions(q_annotations) -> np.ndarray:
    q = np.asarray(q_annotations, dtype=np.float64)
    if q.ndim != 2 or not np.all(np.isfinite(q)):
        raise ValueError(f"q_annotations must be a finite (M, C) array, got shape {q.shape}")
    return q


def annotator_error_per_annotation(q_annotations, labels) -> np.ndarray:
    """(M,) 1.0 where ``argmax q_a`` differs from the annotator's label, else 0.0."""
    q = _predictions(q_annotations)
    given = _labels(labels, len(q), q.shape[1], "labels")
    return (q.argmax(axis=1) != given).astype(np.float64)


def annotator_distance_per_annotation(q_annotations, labels, ranks) -> np.ndarray:
    """(M,) ``|rank(argmax q_a) - rank(label)|`` (``ranks`` from :func:`class_ranks`)."""
    q = _predictions(q_annotations)
    given = _labels(labels, len(q), q.shape[1], "labels")
    rank = np.asarray(ranks, dtype=np.int64)
    return np.abs(rank[q.argmax(axis=1)] - rank[given]).astype(np.float64)


def wasserstein_per_item(q, t, ranks) -> np.ndarray:
    """(N,) ``W1(t_i, q_i) = sum_k |F_t(k) - F_q(k)|`` with the classes in ``ranks`` order."""
    q_arr, t_arr = np.asarray(q, dtype=np.float64), np.asarray(t, dtype=np.float64)
    if q_arr.shape != t_arr.shape or q_arr.ndim != 2:
        raise ValueError(
            f"q and t must have the same (N, C) shape, got {q_arr.shape}, {t_arr.shape}"
        )
    order = np.argsort(np.asarray(ranks))  # class index at each rank
    cdf_q = np.cumsum(q_arr[:, order], axis=1)
    cdf_t = np.cumsum(t_arr[:, order], axis=1)
    return np.abs(cdf_q - cdf_t)[:, :-1].sum(axis=1)


def perspectivist_metrics(
    q_annotations,
    labels,
    majority,
    ranks: np.ndarray | None,
    q=None,
    t=None,
) -> dict[str, float]:
    """The :data:`ANNOTATOR_METRICS` that apply, as floats.

    ``q_annotations`` (M, C): the predicted distribution of each annotation's annotator on its
    item; ``labels`` (M,): the labels given; ``majority`` (M,): the majority label of each
    annotation's item (the baseline); ``ranks``: :func:`class_ranks` (None: not ordinal, so
    no distances). ``q``, ``t`` (N, C): the crowd prediction and the annotators' distribution,
    for ``wasserstein`` (ordinal only). With no annotations (M = 0) only ``wasserstein`` is
    returned.
    """
    q_ann = _predictions(q_annotations)
    results: dict[str, float] = {}
    if len(q_ann):
        num_classes = q_ann.shape[1]
        given = _labels(labels, len(q_ann), num_classes, "labels")
        baseline = np.eye(num_classes)[_labels(majority, len(q_ann), num_classes, "majority")]
        results["annotator_error"] = float(annotator_error_per_annotation(q_ann, given).mean())
        results["annotator_error_majority"] = float(
            annotator_error_per_annotation(baseline, given).mean()
        )
        if ranks is not None:
            results["annotator_distance"] = float(
                annotator_distance_per_annotation(q_ann, given, ranks).mean()
            )
            results["annotator_distance_majority"] = float(
                annotator_distance_per_annotation(baseline, given, ranks).mean()
            )
    if ranks is not None and q is not None and t is not None:
        results["wasserstein"] = float(wasserstein_per_item(q, t, ranks).mean())
    return results
