"""How well a scorer ranks the candidates of each context, against known utilities (issue 13).

Shapes: ``N`` candidates in ``G`` groups (a group: the candidates answering one context),
``K_g`` candidates in group ``g``.

- ``scores`` ``s``: (N,) the scorer's scores, higher = better (a preference model's
  ``S(x) = sum_l u_l q(l | x)``, a reward model's reward, ...).
- ``utilities`` ``u``: (N,) the true utilities (on synthetic data the oracle's
  ``sum_l u_l p*(l | x)``).
- ``groups``: (N,) a group id per candidate (any hashable). Within a group the input order is
  kept; it matters only for best-of-K, which reads "the first K candidates".

**Ties** are exact equality, in ``s`` as in ``u``. A pair the scorer ties counts 1/2 (what a
fair coin breaking the tie earns on average); a top score shared by several candidates picks
each of them with equal chance, so top-1 and best-of-K take the mean over the tied ones.

Metrics (registry :data:`RANKING_METRICS`; each declares ``higher_is_better``, ``None`` for
reference values that must not drive selection):

- ``pairwise_accuracy = sum_g sum_{i<j in g, u_i != u_j} c_ij / #those pairs`` with
  ``c_ij = 1`` if ``(s_i - s_j)(u_i - u_j) > 0``, ``1/2`` if ``s_i = s_j``, else 0: pooled
  over all pairs of all groups (BRIO's "share of candidate pairs ordered like the metric").
  A random scorer gets 0.5.
- ``spearman``: mean over *ranked groups* (``K_g >= 2`` and ``u`` not constant) of the Pearson
  correlation of the average ranks of ``s`` and ``u``; a group where ``s`` is constant scores
  0 (it orders nothing), it is not left out. Random: 0.
- ``top1``: mean over ranked groups of ``P(u_pick = max_g u)``, the pick uniform among the
  candidates with the top score. ``top1_random``: the same for a uniform pick,
  ``#{i: u_i = max u} / K_g``.
- ``best_of_{K}``: mean over all groups of the utility of the scorer's pick among the group's
  first ``min(K, K_g)`` candidates (mean ``u`` over tied top scores); beside it the oracle's
  pick ``best_of_{K}_oracle`` (``max u``, the ceiling), a uniform pick ``best_of_{K}_random``
  (``mean u``) and ``best_of_{K}_first`` (the first candidate: the generator's own choice
  when the group is in its order). A group with one candidate gives all four its utility.

Groups left out of a metric are counted by :func:`ranking_counts`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata

BEST_OF_K = (4, 8, 16)
"""The K of the best-of-K metrics in :data:`RANKING_METRICS`."""

ArrayLike = Any  # numpy array, list or torch tensor


# --------------------------------------------------------------------------------------------
# Input checks and groups


def _as_vector(x: ArrayLike, name: str) -> np.ndarray:
    """(N,) float64 array of finite values."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().double().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty (N,) array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def split_groups(
    scores: ArrayLike, utilities: ArrayLike, groups: Sequence[Hashable]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(s_g (K_g,), u_g (K_g,)), ...]`` per group, groups in order of first appearance,
    candidates in input order."""
    s = _as_vector(scores, "scores")
    u = _as_vector(utilities, "utilities")
    if len(groups) != s.size or u.size != s.size:
        raise ValueError(
            f"scores, utilities and groups must have one entry per candidate, got "
            f"{s.size}, {u.size} and {len(groups)}"
        )
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return [(s[idx], u[idx]) for idx in (np.array(m) for m in members.values())]


def is_ranked(u: np.ndarray) -> bool:
    """Whether a group has something to rank: two candidates or more, not all of one utility."""
    return u.size >= 2 and bool(np.ptp(u) > 0)


# --------------------------------------------------------------------------------------------
# One group: s (K,), u (K,)


def pair_credits(s: np.ndarray, u: np.ndarray) -> tuple[float, int]:
    """``(sum_{i<j, u_i != u_j} c_ij, number of such pairs)`` of one group (``c_ij`` in the
    module docstring: 1 concordant, 1/2 tied in ``s``, 0 discordant)."""
    i, j = np.triu_indices(s.size, k=1)
    d_u = u[i] - u[j]
    d_s = s[i] - s[j]
    counted = d_u != 0
    credit = np.where(d_s == 0, 0.5, (np.sign(d_s) == np.sign(d_u)).astype(np.float64))
    return float(credit[counted].sum()), int(counted.sum())


def rank_correlation(s: np.ndarray, u: np.ndarray) -> float:
    """Spearman's rho of one ranked group: Pearson correlation of the average ranks; 0 when
    ``s`` is constant."""
    rank_s = rankdata(s) - (s.size + 1) / 2  # (K,) centred average ranks
    rank_u = rankdata(u) - (u.size + 1) / 2
    denominator = np.sqrt(np.dot(rank_s, rank_s) * np.dot(rank_u, rank_u))
    return float(np.dot(rank_s, rank_u) / denominator) if denominator > 0 else 0.0


def picked_utility(s: np.ndarray, u: np.ndarray) -> float:
    """Expected utility of the scorer's pick: the mean ``u`` over the candidates with the top
    score."""
    return float(u[s == s.max()].mean())


def top1_hit(s: np.ndarray, u: np.ndarray) -> float:
    """``P(u_pick = max u)`` with the pick uniform among the top-scored candidates."""
    return float((u[s == s.max()] == u.max()).mean())


# --------------------------------------------------------------------------------------------
# Aggregates over groups: f(scores (N,), utilities (N,), groups (N,)) -> float


def pairwise_accuracy(scores: ArrayLike, utilities: ArrayLike, groups: Sequence) -> float:
    """Pooled share of within-group pairs with different utilities that the scores order the
    same way (ties in ``s``: 1/2); nan when no group has such a pair."""
    credit, pairs = 0.0, 0
    for s, u in split_groups(scores, utilities, groups):
        c, n = pair_credits(s, u)
        credit, pairs = credit + c, pairs + n
    return credit / pairs if pairs else float("nan")


def _mean_over_ranked(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    def compute(scores: ArrayLike, utilities: ArrayLike, groups: Sequence) -> float:
        values = [fn(s, u) for s, u in split_groups(scores, utilities, groups) if is_ranked(u)]
        return float(np.mean(values)) if values else float("nan")

    return compute


spearman = _mean_over_ranked(rank_correlation)
spearman.__doc__ = "Mean Spearman's rho over ranked groups (constant ``s``: 0); nan if none."
top1 = _mean_over_ranked(top1_hit)
top1.__doc__ = "Share of ranked groups whose top-scored candidate has the group's max utility."
top1_random = _mean_over_ranked(lambda s, u: float((u == u.max()).mean()))
top1_random.__doc__ = "top1 of a uniform pick: mean over ranked groups of #argmax u / K_g."

BEST_OF_K_PICKS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "": picked_utility,
    "_oracle": lambda s, u: float(u.max()),
    "_random": lambda s, u: float(u.mean()),
    "_first": lambda s, u: float(u[0]),
}
"""Name suffix -> who picks among the first K: the scorer, the oracle, uniform, the first."""


def best_of_k(
    scores: ArrayLike, utilities: ArrayLike, groups: Sequence, k: int, pick: str = ""
) -> float:
    """Mean over groups of the utility picked among each group's first ``min(k, K_g)``
    candidates; ``pick`` a key of :data:`BEST_OF_K_PICKS` ("" is the scorer)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    chooser = BEST_OF_K_PICKS[pick]
    values = [chooser(s[:k], u[:k]) for s, u in split_groups(scores, utilities, groups)]
    return float(np.mean(values))


# --------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class RankingMetric:
    """One ranking metric: ``compute(scores, utilities, groups) -> float`` and its direction
    (``None``: a reference value, never used to select a model)."""

    name: str
    higher_is_better: bool | None
    description: str
    compute: Callable[[ArrayLike, ArrayLike, Sequence], float]

    def __call__(self, scores: ArrayLike, utilities: ArrayLike, groups: Sequence) -> float:
        return self.compute(scores, utilities, groups)


def _best_of_k_metrics(k: int) -> list[RankingMetric]:
    described = {
        "": (True, f"mean utility of the scorer's pick among the first {k} candidates"),
        "_oracle": (None, f"mean max utility among the first {k} (the ceiling of reranking)"),
        "_random": (None, f"mean utility of a uniform pick among the first {k}"),
        "_first": (None, f"mean utility of the first candidate (the generator's own pick, {k})"),
    }
    return [
        RankingMetric(
            f"best_of_{k}{suffix}",
            direction,
            text,
            functools.partial(best_of_k, k=k, pick=suffix),
        )
        for suffix, (direction, text) in described.items()
    ]


def ranking_metric_registry(ks: Sequence[int] = BEST_OF_K) -> dict[str, RankingMetric]:
    """Every ranking metric by name, in reporting order, best-of-K for each ``k`` in ``ks``."""
    metrics = [
        RankingMetric(
            "pairwise_accuracy",
            True,
            "share of within-group pairs with different utilities ordered like the utilities "
            "(score ties count 1/2; random 0.5)",
            pairwise_accuracy,
        ),
        RankingMetric(
            "spearman",
            True,
            "mean Spearman rho of scores vs utilities over ranked groups (random 0)",
            spearman,
        ),
        RankingMetric(
            "top1", True, "share of ranked groups whose top-scored candidate is a best one", top1
        ),
        RankingMetric("top1_random", None, "top1 of a uniform pick", top1_random),
    ]
    for k in ks:
        metrics.extend(_best_of_k_metrics(k))
    return {m.name: m for m in metrics}


RANKING_METRICS: dict[str, RankingMetric] = ranking_metric_registry()
"""The ranking metrics with best-of-K for K in :data:`BEST_OF_K`."""


def compute_ranking_metrics(
    scores: ArrayLike, utilities: ArrayLike, groups: Sequence, ks: Sequence[int] = BEST_OF_K
) -> dict[str, float]:
    """Every metric of :func:`ranking_metric_registry` (``ks``), in order, as Python floats."""
    registry = RANKING_METRICS if tuple(ks) == BEST_OF_K else ranking_metric_registry(ks)
    return {name: float(m(scores, utilities, groups)) for name, m in registry.items()}


def ranking_counts(
    scores: ArrayLike, utilities: ArrayLike, groups: Sequence, ks: Sequence[int] = BEST_OF_K
) -> dict[str, int]:
    """What the metrics rest on: candidates, groups, ranked groups (spearman, top1), groups
    left out (one candidate; constant utility), pairs with different utilities
    (pairwise_accuracy) and how many of them the scores tie, groups shorter than each K."""
    split = split_groups(scores, utilities, groups)
    tied = pairs = 0
    for s, u in split:
        i, j = np.triu_indices(s.size, k=1)
        counted = u[i] != u[j]
        pairs += int(counted.sum())
        tied += int((counted & (s[i] == s[j])).sum())
    counts = {
        "candidates": sum(s.size for s, _ in split),
        "groups": len(split),
        "ranked_groups": sum(is_ranked(u) for _, u in split),
        "single_candidate_groups": sum(u.size < 2 for _, u in split),
        "constant_utility_groups": sum(u.size >= 2 and not is_ranked(u) for _, u in split),
        "pairs": pairs,
        "score_tied_pairs": tied,
    }
    for k in ks:
        counts[f"groups_shorter_than_{k}"] = sum(u.size < k for _, u in split)
    return counts
