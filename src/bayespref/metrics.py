"""Disagreement-aware evaluation of a preference model against its annotators (METHOD section 6).

Shapes: ``N`` items, ``C`` classes.

- ``q``: the model's predicted distribution, (N, C), rows summing to 1.
- ``t``: the empirical annotator distribution ``t_i(l) = count_i(l) / n_i``, (N, C).
- ``labels``: the majority label per item, (N,) int, computed elsewhere with the dataset's
  tie rule (:func:`bayespref.data.priors.majority_label`).
- ``true_distribution``: the generating distribution ``p*`` on synthetic data, (N, C).

As in lm-evaluation-harness, a metric is a per-item function plus an aggregation plus a
direction: each :class:`Metric` in :data:`METRICS` carries ``higher_is_better`` so that model
selection (:func:`is_better`) never guesses. Metrics that are a mean over items expose
``per_item`` (returning (N,)) so that callers can bootstrap confidence intervals.

Every metric function takes the same arguments ``(q, t, labels=None, true_distribution=None)``
(inputs a metric does not use may be ``None``). Inputs may be numpy arrays, lists or torch
tensors; they are converted to float64 numpy arrays and validated (shapes, finiteness,
non-negativity, rows summing to 1 within ``1e-4``), raising ``ValueError`` otherwise.

Logarithms are natural (nats). Where ``log q`` is taken, ``q`` is clipped below at
:data:`PROB_FLOOR` (``1e-12``) so that ``q = 0`` where ``t > 0`` costs a large but finite
``-log(1e-12) ~ 27.6`` nats per unit of ``t`` instead of ``inf``. Terms with ``t = 0`` (or
``p* = 0``) contribute exactly 0 (``0 log 0 = 0``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import rel_entr, xlogy
from scipy.stats import rankdata

PROB_FLOOR = 1e-12
"""Lower clip applied to ``q`` before taking ``log q`` (soft_ce, excess_ce, kl_true)."""

ROW_SUM_TOL = 1e-4
"""Tolerance on ``|sum_l q_i(l) - 1|`` (and the same for ``t`` and ``p*``)."""

ECE_BINS = 15
"""Number of equal-width confidence bins used by ``ece`` and ``ece_hard``."""

ENTROPY_DECIMALS = 10
"""Entropies are rounded to this many decimals before ranking in ``entropy_spearman``."""

ArrayLike = Any  # numpy array, nested list or torch tensor

# --------------------------------------------------------------------------------------------
# Input conversion and validation


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """numpy view of ``x``; torch tensors are detached and moved to CPU first."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()  # also covers bfloat16, which numpy cannot hold
        x = x.numpy()
    return np.asarray(x)


def _as_distribution(x: ArrayLike, name: str) -> np.ndarray:
    """Validated (N, C) float64 array of probability rows."""
    arr = _to_numpy(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, C), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one item and one class, got {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    if np.any(arr < 0):
        raise ValueError(f"{name} contains negative probabilities (min {arr.min():.3g})")
    row_sums = arr.sum(axis=1)
    bad = np.flatnonzero(np.abs(row_sums - 1.0) > ROW_SUM_TOL)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"rows of {name} must sum to 1 (tolerance {ROW_SUM_TOL}); "
            f"{bad.size} row(s) do not, e.g. row {i} sums to {row_sums[i]:.6g}"
        )
    return arr


def _as_labels(labels: ArrayLike, num_items: int, num_classes: int) -> np.ndarray:
    """Validated (N,) int64 array of class indices in ``[0, C)``."""
    arr = _to_numpy(labels)
    if arr.ndim != 1 or arr.shape[0] != num_items:
        raise ValueError(f"labels must have shape ({num_items},) to match q, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.bool_) or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"labels must be integer class indices, got dtype {arr.dtype}")
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("labels must be integer class indices, got non-integer values")
    arr = arr.astype(np.int64)
    if np.any(arr < 0) or np.any(arr >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got range [{arr.min()}, {arr.max()}]"
        )
    return arr


def _check_q_t(q: ArrayLike, t: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    q_arr = _as_distribution(q, "q")
    t_arr = _as_distribution(t, "t")
    if q_arr.shape != t_arr.shape:
        raise ValueError(
            f"q and t must have the same shape (N, C), got q {q_arr.shape} and t {t_arr.shape}"
        )
    return q_arr, t_arr


def _check_q_labels(q: ArrayLike, labels: ArrayLike | None) -> tuple[np.ndarray, np.ndarray]:
    q_arr = _as_distribution(q, "q")
    if labels is None:
        raise ValueError("this metric needs the majority labels (labels=...)")
    return q_arr, _as_labels(labels, *q_arr.shape)


# --------------------------------------------------------------------------------------------
# Building blocks


def entropy(p: ArrayLike) -> np.ndarray:
    """Shannon entropy in nats per row, ``H(p_i) = -sum_l p_i(l) log p_i(l)``, shape (N,)."""
    p_arr = _as_distribution(p, "p")
    return -xlogy(p_arr, p_arr).sum(axis=1)


def expected_calibration_error(
    confidence: ArrayLike, correctness: ArrayLike, n_bins: int = ECE_BINS
) -> float:
    """``ECE = sum_b (|B_b| / N) |mean_{i in B_b} correctness_i - mean_{i in B_b} confidence_i|``.

    ``confidence`` and ``correctness`` have shape (N,) with values in [0, 1]. Bins are
    ``n_bins`` equal-width intervals of [0, 1], closed on the right: ``(k/n, (k+1)/n]``, with
    a confidence of exactly 0 put in the first bin. Empty bins contribute nothing.
    ``correctness`` may be fractional (the soft ECE of ``ece``) or 0/1 (``ece_hard``).
    """
    conf = _to_numpy(confidence).astype(np.float64)
    corr = _to_numpy(correctness).astype(np.float64)
    if conf.ndim != 1 or conf.shape != corr.shape or conf.size == 0:
        raise ValueError(
            "confidence and correctness must be non-empty (N,) arrays of the same shape, "
            f"got {conf.shape} and {corr.shape}"
        )
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") gives k with edges[k-1] < conf <= edges[k]: right-closed bins.
    bin_index = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)  # (N,)
    count = np.bincount(bin_index, minlength=n_bins)  # (n_bins,)
    conf_sum = np.bincount(bin_index, weights=conf, minlength=n_bins)
    corr_sum = np.bincount(bin_index, weights=corr, minlength=n_bins)
    # sum_b (n_b / N) |corr_sum_b / n_b - conf_sum_b / n_b| = sum_b |corr_sum_b - conf_sum_b| / N
    return float(np.abs(corr_sum - conf_sum)[count > 0].sum() / conf.size)


# --------------------------------------------------------------------------------------------
# Per-item metrics, shape (N,). All share the signature (q, t, labels=None, true_distribution=None).


def soft_ce_per_item(q, t, labels=None, true_distribution=None) -> np.ndarray:
    """Soft cross-entropy ``-sum_l t_i(l) log max(q_i(l), 1e-12)``, shape (N,)."""
    q, t = _check_q_t(q, t)
    return -xlogy(t, np.maximum(q, PROB_FLOOR)).sum(axis=1)


def entropy_floor_per_item(q, t, labels=None, true_distribution=None) -> np.ndarray:
    """Annotator entropy ``H(t_i)``, the value soft_ce takes when ``q_i = t_i``, shape (N,).

    ``q`` is only checked for shape.
    """
    _, t = _check_q_t(q, t)
    return -xlogy(t, t).sum(axis=1)


def excess_ce_per_item(q, t, labels=None, true_distribution=None) -> np.ndarray:
    """``KL(t_i || q_i) = soft_ce_i - H(t_i)``, shape (N,); 0 iff ``q_i = t_i`` on t's support.

    Computed as the difference so that ``soft_ce == entropy_floor + excess_ce`` holds to
    rounding; with the clip on ``q`` it can be negative by at most about ``C * 1e-12``.
    """
    return soft_ce_per_item(q, t) - entropy_floor_per_item(q, t)


def jsd_per_item(q, t, labels=None, true_distribution=None) -> np.ndarray:
    """Jensen-Shannon divergence in nats, ``0.5 KL(t||m) + 0.5 KL(q||m)``, ``m = (t + q) / 2``.

    Shape (N,). Symmetric in (q, t), in ``[0, log 2]``, needs no clip (``m > 0`` wherever
    ``t > 0`` or ``q > 0``).
    """
    q, t = _check_q_t(q, t)
    m = 0.5 * (q + t)
    return 0.5 * rel_entr(t, m).sum(axis=1) + 0.5 * rel_entr(q, m).sum(axis=1)


def manhattan_per_item(q, t, labels=None, true_distribution=None) -> np.ndarray:
    """Manhattan (L1) distance ``sum_l |t_i(l) - q_i(l)|``, in [0, 2], shape (N,)."""
    q, t = _check_q_t(q, t)
    return np.abs(t - q).sum(axis=1)


def accuracy_per_item(q, t=None, labels=None, true_distribution=None) -> np.ndarray:
    """``1[argmax_l q_i(l) == labels_i]`` as float, shape (N,); ``t`` is unused.

    Ties in ``q`` go to the lowest class index (``np.argmax``).
    """
    q, labels = _check_q_labels(q, labels)
    return (q.argmax(axis=1) == labels).astype(np.float64)


def brier_per_item(q, t, labels=None, true_distribution=None) -> np.ndarray:
    """Multi-class Brier score against the annotators, ``sum_l (q_i(l) - t_i(l))^2``, (N,)."""
    q, t = _check_q_t(q, t)
    return np.square(q - t).sum(axis=1)


def kl_true_per_item(q, t=None, labels=None, true_distribution=None) -> np.ndarray:
    """``KL(p*_i || q_i) = sum_l p*_i(l) (log p*_i(l) - log max(q_i(l), 1e-12))``, (N,).

    ``p*`` is ``true_distribution``, the generating distribution of synthetic data; ``t``
    is unused.
    """
    if true_distribution is None:
        raise ValueError("kl_true needs the generating distribution (true_distribution=...)")
    q, p_true = _check_q_t(q, true_distribution)
    return (xlogy(p_true, p_true) - xlogy(p_true, np.maximum(q, PROB_FLOOR))).sum(axis=1)


# --------------------------------------------------------------------------------------------
# Aggregate metrics that are not a mean of per-item values


def macro_f1(q, t=None, labels=None, true_distribution=None) -> float:
    """Macro-F1 of ``argmax q`` against the majority labels; ``t`` is unused.

    Averaged over the classes that occur in ``labels`` or in the predictions (classes absent
    from both are skipped), with ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``.
    """
    q, labels = _check_q_labels(q, labels)
    predicted = q.argmax(axis=1)
    scores = []
    for c in np.union1d(labels, predicted):
        tp = np.sum((predicted == c) & (labels == c))
        fp = np.sum((predicted == c) & (labels != c))
        fn = np.sum((predicted != c) & (labels == c))
        scores.append(2.0 * tp / (2.0 * tp + fp + fn))
    return float(np.mean(scores))


def ece(q, t, labels=None, true_distribution=None) -> float:
    """Expected calibration error against the annotators (15 equal-width bins).

    Confidence of item i: ``max_l q_i(l)``. Its "accuracy": ``t_i(argmax_l q_i(l))``, the
    probability that a randomly drawn annotator agrees with the prediction (so a model with
    ``q = t`` has ECE exactly 0, however much the annotators disagree). See
    :func:`expected_calibration_error` for the binning.
    """
    q, t = _check_q_t(q, t)
    predicted = q.argmax(axis=1)
    agreement = t[np.arange(t.shape[0]), predicted]
    return expected_calibration_error(q.max(axis=1), agreement)


def ece_hard(q, t=None, labels=None, true_distribution=None) -> float:
    """Expected calibration error against the majority label (0/1 correctness, 15 bins).

    Confidence ``max_l q_i(l)``; correctness ``1[argmax_l q_i(l) == labels_i]``. ``t`` is
    unused. This is the usual single-label ECE; prefer ``ece`` on disagreement data.
    """
    q, labels = _check_q_labels(q, labels)
    return expected_calibration_error(
        q.max(axis=1), (q.argmax(axis=1) == labels).astype(np.float64)
    )


def entropy_spearman(q, t, labels=None, true_distribution=None) -> float:
    """Spearman rank correlation between ``H(q_i)`` and ``H(t_i)`` across items.

    Answers "does the model know where people disagree?" (+1: it ranks items by annotator
    disagreement perfectly). Entropies are rounded to ``ENTROPY_DECIMALS`` decimals before
    ranking so that float noise cannot order entropies that are equal in exact arithmetic
    (e.g. permuted distributions); ties get average ranks. Returns ``nan`` (does not raise)
    when fewer than 2 items are given or either entropy is constant across items, since the
    correlation is then undefined.
    """
    q, t = _check_q_t(q, t)
    h_q = np.round(-xlogy(q, q).sum(axis=1), ENTROPY_DECIMALS)
    h_t = np.round(-xlogy(t, t).sum(axis=1), ENTROPY_DECIMALS)
    if h_q.size < 2 or np.all(h_q == h_q[0]) or np.all(h_t == h_t[0]):
        return math.nan
    rank_q = rankdata(h_q) - (h_q.size + 1) / 2.0
    rank_t = rankdata(h_t) - (h_t.size + 1) / 2.0
    return float(
        np.dot(rank_q, rank_t) / math.sqrt(np.dot(rank_q, rank_q) * np.dot(rank_t, rank_t))
    )


# --------------------------------------------------------------------------------------------
# Registry

MetricFn = Callable[..., float]
PerItemFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Metric:
    """One evaluation metric: an aggregate function, optionally its per-item values, a direction.

    ``compute`` and ``per_item`` take ``(q, t, labels=None, true_distribution=None)``.
    ``higher_is_better`` is ``None`` for reference quantities (e.g. the entropy floor) that
    must not drive model selection. ``requires`` names the optional inputs the metric needs
    besides ``q`` and ``t`` (``"labels"``, ``"true_distribution"``).
    """

    name: str
    higher_is_better: bool | None
    description: str
    compute: MetricFn
    per_item: PerItemFn | None = None
    requires: tuple[str, ...] = ()

    def __call__(self, q, t, labels=None, true_distribution=None) -> float:
        return self.compute(q, t, labels=labels, true_distribution=true_distribution)

    @property
    def selectable(self) -> bool:
        """Whether the metric has a direction and can be used for model selection."""
        return self.higher_is_better is not None


def _mean_of(per_item: PerItemFn) -> MetricFn:
    def compute(q, t, labels=None, true_distribution=None) -> float:
        return float(np.mean(per_item(q, t, labels=labels, true_distribution=true_distribution)))

    compute.__name__ = per_item.__name__.removesuffix("_per_item")
    compute.__doc__ = f"Mean over items of :func:`{per_item.__name__}`."
    return compute


def _mean_metric(
    name: str,
    higher_is_better: bool | None,
    description: str,
    per_item: PerItemFn,
    requires: tuple[str, ...] = (),
) -> Metric:
    return Metric(name, higher_is_better, description, _mean_of(per_item), per_item, requires)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in [
        _mean_metric(
            "soft_ce",
            False,
            "soft cross-entropy -sum_l t log q (LeWiDi 2023 primary metric), q clipped at 1e-12",
            soft_ce_per_item,
        ),
        _mean_metric(
            "entropy_floor",
            None,
            "annotator entropy H(t), the lowest soft_ce any model can reach (reference only)",
            entropy_floor_per_item,
        ),
        _mean_metric(
            "excess_ce",
            False,
            "KL(t || q) = soft_ce - entropy_floor; 0 is perfect",
            excess_ce_per_item,
        ),
        _mean_metric(
            "jsd",
            False,
            "Jensen-Shannon divergence between t and q in nats, in [0, log 2]",
            jsd_per_item,
        ),
        _mean_metric(
            "manhattan",
            False,
            "L1 distance |t - q|_1 (LeWiDi 2025), in [0, 2]",
            manhattan_per_item,
        ),
        _mean_metric(
            "accuracy",
            True,
            "argmax q against the majority label",
            accuracy_per_item,
            requires=("labels",),
        ),
        Metric(
            "macro_f1",
            True,
            "macro-F1 of argmax q against the majority label, over classes that occur",
            macro_f1,
            requires=("labels",),
        ),
        Metric(
            "ece",
            False,
            "expected calibration error, 15 bins on max q, accuracy = t(argmax q)",
            ece,
        ),
        Metric(
            "ece_hard",
            False,
            "expected calibration error, 15 bins on max q, 0/1 correctness vs majority label",
            ece_hard,
            requires=("labels",),
        ),
        _mean_metric(
            "brier",
            False,
            "Brier score against the annotators, sum_l (q - t)^2",
            brier_per_item,
        ),
        Metric(
            "entropy_spearman",
            True,
            "Spearman correlation of H(q) and H(t) across items (nan if either is constant)",
            entropy_spearman,
        ),
        _mean_metric(
            "kl_true",
            False,
            "KL(p* || q) against the generating distribution (synthetic data only)",
            kl_true_per_item,
            requires=("true_distribution",),
        ),
    ]
}
"""All metrics by name, in reporting order."""


def compute_metrics(
    q: ArrayLike,
    t: ArrayLike,
    labels: ArrayLike,
    true_distribution: ArrayLike | None = None,
) -> dict[str, float]:
    """Every applicable metric of :data:`METRICS`, in registry order, as Python floats.

    ``q``, ``t``: (N, C) distributions; ``labels``: (N,) majority labels; ``true_distribution``:
    (N, C) ``p*`` or ``None``, in which case ``kl_true`` is omitted.
    """
    q, t = _check_q_t(q, t)
    labels = _as_labels(labels, *q.shape)
    if true_distribution is not None:
        true_distribution = _as_distribution(true_distribution, "true_distribution")
        if true_distribution.shape != q.shape:
            raise ValueError(
                "true_distribution must have the same shape (N, C) as q, got "
                f"{true_distribution.shape} and {q.shape}"
            )
    results = {}
    for name, metric in METRICS.items():
        if "true_distribution" in metric.requires and true_distribution is None:
            continue
        results[name] = float(metric(q, t, labels=labels, true_distribution=true_distribution))
    return results


# --------------------------------------------------------------------------------------------
# Model selection


def is_better(name: str, candidate: float | None, incumbent: float | None) -> bool:
    """Whether ``candidate`` strictly improves on ``incumbent`` for metric ``name``.

    A nan (or ``None``) candidate is never better; any other candidate beats a nan or ``None``
    incumbent. Raises ``ValueError`` for unknown metrics and for metrics without a direction.
    """
    metric = METRICS.get(name)
    if metric is None or metric.higher_is_better is None:
        selectable = ", ".join(n for n, m in METRICS.items() if m.selectable)
        reason = "unknown metric" if metric is None else "metric has no direction (reference only)"
        raise ValueError(f"{reason}: {name!r}; metrics usable for selection: {selectable}")
    if candidate is None or math.isnan(float(candidate)):
        return False
    if incumbent is None or math.isnan(float(incumbent)):
        return True
    candidate, incumbent = float(candidate), float(incumbent)
    if metric.higher_is_better:
        return candidate > incumbent
    return candidate < incumbent
