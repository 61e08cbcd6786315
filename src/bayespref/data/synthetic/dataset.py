"""The public constructors of the synthetic data: the annotated dataset, generator contexts,
and the loader-interface wrapper (:func:`load_synthetic`)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import numpy as np

from ..schema import AnnotatedDataset, AnnotatedExample, LoadReport
from .annotators import SimulatedAnnotator, default_annotator_pool, simulate_annotations
from .oracle import SyntheticOracle
from .texts import sample_context_with_replies, sample_item

# The package's logger, not this module's: log lines keep the name they had before the split.
logger = logging.getLogger(__package__)


def make_synthetic_dataset(
    n: int,
    seed: int = 0,
    min_annotators: int = 1,
    max_annotators: int = 7,
    *,
    pool: Sequence[SimulatedAnnotator] | None = None,
    oracle: SyntheticOracle | None = None,
    name: str | None = None,
) -> AnnotatedDataset:
    """``n`` synthetic items with ``true_distribution = p*`` and simulated annotations.

    Each item gets ``k ~ Uniform{min_annotators..max_annotators}`` distinct annotators from
    ``pool`` (default :func:`default_annotator_pool`), picked with probability proportional to
    their activity. Deterministic given ``seed``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = list(default_annotator_pool() if pool is None else pool)
    if not 1 <= min_annotators <= max_annotators:
        raise ValueError(
            f"need 1 <= min_annotators <= max_annotators, got {min_annotators}, {max_annotators}"
        )
    if max_annotators > len(pool):
        raise ValueError(f"max_annotators={max_annotators} exceeds the pool of {len(pool)}")
    oracle = oracle or SyntheticOracle()
    space = oracle.label_space

    text_rng = random.Random(f"bayespref-synthetic-items-{seed}")
    items = [sample_item(text_rng) for _ in range(n)]
    true = oracle.distributions((context, response) for _, _, context, response in items)

    rng = np.random.default_rng([seed, 0x5EED])
    num_annotators, who, labels = simulate_annotations(
        true, pool, min_annotators, max_annotators, rng
    )  # (N,), (M,), (M,)

    examples = []
    bounds = np.concatenate([[0], np.cumsum(num_annotators)])
    for i, (topic, style, context, response) in enumerate(items):
        lo, hi = bounds[i], bounds[i + 1]
        annotations = [(pool[a].id, int(c)) for a, c in zip(who[lo:hi], labels[lo:hi], strict=True)]
        examples.append(
            AnnotatedExample(
                id=f"syn{seed}-{i:06d}",
                context=[context],
                response=response,
                counts=np.bincount(labels[lo:hi], minlength=space.num_classes).astype(np.int64),
                annotations=annotations,
                true_distribution=true[i],
                meta={"topic": topic, "style": style},
            )
        )
    report = LoadReport(source=f"synthetic(n={n}, seed={seed})", read=n, kept=n)
    logger.info("%s", report.summary())
    return AnnotatedDataset(
        examples=examples, label_space=space, name=name or f"synthetic-{seed}", report=report
    )


def make_synthetic_contexts(
    n: int, seed: int = 0, *, candidates: int = 4, oracle: SyntheticOracle | None = None
) -> list[dict]:
    """``n`` contexts, each with a gold (high-utility) reply, for generator calibration.

    Returns dicts ``{"id", "context" (list of one turn), "gold", "gold_utility", "topic"}``.
    The gold reply is the best, by oracle utility, of ``candidates`` supportive replies.
    """
    if n < 0 or candidates < 1:
        raise ValueError(f"need n >= 0 and candidates >= 1, got {n}, {candidates}")
    oracle = oracle or SyntheticOracle()
    rng = random.Random(f"bayespref-synthetic-contexts-{seed}")
    rows = []
    for i in range(n):
        topic, context, replies = sample_context_with_replies(rng, candidates, "supportive")
        utilities = oracle.utilities((context, r) for r in replies)
        best = int(np.argmax(utilities))
        rows.append(
            {
                "id": f"ctx{seed}-{i:06d}",
                "context": [context],
                "gold": replies[best],
                "gold_utility": float(utilities[best]),
                "topic": topic,
            }
        )
    return rows


def load_synthetic(
    path: None = None,
    *,
    n: int = 1000,
    seed: int = 0,
    min_annotators: int = 1,
    max_annotators: int = 7,
    pool_size: int = 20,
    temperature: float = 1.0,
    strict: bool = False,
    name: str | None = None,
) -> AnnotatedDataset:
    """:func:`make_synthetic_dataset` behind the loader interface (``path`` must be None)."""
    if path is not None:
        raise ValueError(f"the synthetic dataset is generated, it takes no path (got {path!r})")
    del strict  # nothing is ever skipped
    return make_synthetic_dataset(
        n,
        seed=seed,
        min_annotators=min_annotators,
        max_annotators=max_annotators,
        pool=default_annotator_pool(pool_size),
        oracle=SyntheticOracle(temperature=temperature),
        name=name,
    )
