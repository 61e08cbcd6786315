"""The simulated annotators of the synthetic data and how they label an item.

A fixed pool (:func:`default_annotator_pool`, 20 annotators ``W01``..``W20``, the same for
every seed, so train and valid share annotators and annotator models such as Dawid-Skene have
something to learn). Annotator ``a`` has a reliability ``r_a`` and a bias distribution
``b_a``: on each item it independently draws a label from ``p*`` with probability ``r_a``
(``p*`` is what a careful annotator population says, so disagreement among reliable
annotators is genuine), otherwise from ``b_a``. Its labels follow
``r_a p* + (1 - r_a) b_a``: a Dawid-Skene confusion matrix ``r_a I + (1 - r_a) 1 b_a^T``
applied to ``p*``. The pool mixes experts (r about 0.9), average annotators, lenient and
harsh ones (biased toward ``supportive``/``harmful``), fence-sitters (biased toward
``neutral``) and a spammer (r near 0). Each item gets a uniform number of annotators in
``[min_annotators, max_annotators]``, drawn without replacement, busier annotators more often.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class SimulatedAnnotator:
    """Draws from ``p*`` with probability ``reliability``, otherwise from ``bias``."""

    id: str
    kind: str
    reliability: float
    bias: tuple[float, ...]  # (C,) distribution used when not reliable
    activity: float  # relative chance of being picked for an item


_ANNOTATOR_KINDS = {
    # kind: (reliability range, bias over (harmful, neutral, supportive))
    "expert": ((0.85, 0.97), (1 / 3, 1 / 3, 1 / 3)),
    "average": ((0.65, 0.85), (1 / 3, 1 / 3, 1 / 3)),
    "lenient": ((0.45, 0.7), (0.05, 0.25, 0.70)),
    "harsh": ((0.45, 0.7), (0.65, 0.25, 0.10)),
    "fence-sitter": ((0.45, 0.7), (0.10, 0.80, 0.10)),
    "spammer": ((0.0, 0.15), (1 / 3, 1 / 3, 1 / 3)),
}
_POOL_PATTERN = (
    "expert", "average", "lenient", "expert", "harsh", "average", "fence-sitter", "expert",
    "average", "lenient", "harsh", "spammer", "expert", "average", "fence-sitter", "lenient",
    "average", "harsh", "expert", "average",
)  # fmt: skip


def default_annotator_pool(size: int = 20, seed: int = 20230) -> list[SimulatedAnnotator]:
    """The fixed annotator pool: kinds in a fixed pattern, reliabilities and activities drawn
    from ``seed`` (independent of the dataset seed, so every split shares the pool)."""
    if size < 1:
        raise ValueError(f"the pool needs at least one annotator, got size={size}")
    rng = np.random.default_rng(seed)
    pool = []
    for k in range(size):
        kind = _POOL_PATTERN[k % len(_POOL_PATTERN)]
        (low, high), bias = _ANNOTATOR_KINDS[kind]
        pool.append(
            SimulatedAnnotator(
                id=f"W{k + 1:02d}",
                kind=kind,
                reliability=round(float(rng.uniform(low, high)), 3),
                bias=bias,
                activity=round(float(rng.uniform(0.5, 2.0)), 3),
            )
        )
    return pool


def simulate_annotations(
    true_distributions: np.ndarray,
    pool: Sequence[SimulatedAnnotator],
    min_annotators: int,
    max_annotators: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who labels each item and with which label, ``p*`` given as ``true_distributions`` (N, C).

    Item ``i`` gets ``Uniform{min_annotators..max_annotators}`` distinct annotators from
    ``pool``, picked with probability proportional to their activity; each draws a label from
    ``r_a p* + (1 - r_a) b_a``. Returns ``(num_annotators (N,), who (M,), labels (M,))``: the
    ``M = num_annotators.sum()`` annotations in item order, ``who`` indexing ``pool``. Draws
    from ``rng`` in a fixed order, so a seeded ``rng`` gives the same annotations every time.
    """
    n, num_classes = true_distributions.shape
    num_annotators = np.asarray(rng.integers(min_annotators, max_annotators + 1, size=n))  # (N,)
    # Weighted sampling without replacement: top-k of log(activity) + Gumbel noise.
    log_activity = np.log([a.activity for a in pool])
    keys = log_activity[None, :] + rng.gumbel(size=(n, len(pool)))  # (N, P)
    order = np.argsort(-keys, axis=1, kind="stable")
    item_of = np.repeat(np.arange(n), num_annotators)  # (M,)
    slot_of = np.arange(len(item_of)) - np.repeat(
        np.cumsum(num_annotators) - num_annotators, num_annotators
    )
    who = order[item_of, slot_of]  # (M,) annotator index
    reliability = np.array([a.reliability for a in pool])[who][:, None]  # (M, 1)
    bias = np.array([a.bias for a in pool], dtype=np.float64)[who]  # (M, C)
    probs = reliability * true_distributions[item_of] + (1 - reliability) * bias  # (M, C)
    cdf = np.cumsum(probs, axis=1)
    labels = (rng.random(len(item_of))[:, None] * cdf[:, -1:] > cdf).sum(axis=1)  # (M,)
    labels = np.minimum(labels, num_classes - 1)
    return num_annotators, who, labels
