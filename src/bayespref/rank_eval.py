"""How a trained preference or reward model ranks held-out candidate sets, against the truth
(issue 13): ``bayespref rank-eval --run RUN --data heldout.jsonl``.

The data: native JSONL whose rows carry ``group`` (the context they answer) and
``true_distribution`` (``p*``), such as ``heldout.jsonl`` of ``bayespref annotate-synthetic``;
the label space comes from the data (``meta.json`` beside it). Each candidate's true utility is
``u = sum_l u_l p*(l)`` with the label space's utilities. The run scores every candidate the way
calibration ranks them (:func:`bayespref.reward_model.load_ranker`: a preference model's
expected utility or worst-class rule, or a reward model's reward), and
:mod:`bayespref.ranking_metrics` compares the two rankings within each group.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .data.native import load_native
from .data.schema import DataError
from .ranking_metrics import BEST_OF_K, compute_ranking_metrics, ranking_counts
from .reward_model import load_ranker, ranker_model_dir

logger = logging.getLogger(__name__)

RANK_EVAL_FORMAT = "bayespref-rank-eval/1"


def read_candidate_sets(
    path: str | os.PathLike, source: str | None = None
) -> tuple[list, list[str], np.ndarray, list[str]]:
    """``(contexts, responses, utilities (N,), groups)`` of a native file with ``group`` and
    ``true_distribution`` on every row, in file order; ``source``: keep only the rows whose
    ``source`` field is this (``beam`` or ``sample``). A row without either field is a
    :class:`DataError` naming it."""
    dataset = load_native(Path(path), strict=True)
    examples = [e for e in dataset.examples if source is None or e.meta.get("source") == source]
    if not examples:
        raise DataError(f"no rows{f' with source {source!r}' if source else ''}", str(path))
    for e in examples:
        missing = [k for k in ("group",) if k not in e.meta]
        if e.true_distribution is None:
            missing.append("true_distribution")
        if missing:
            raise DataError(
                f"item {e.id!r} has no {' or '.join(missing)}: rank-eval ranks the candidates of "
                "each group against the utility of p* (bayespref annotate-synthetic writes both)",
                str(path),
            )
    utilities = np.asarray(dataset.label_space.utilities, dtype=np.float64)  # (C,)
    true = np.stack([np.asarray(e.true_distribution) for e in examples])  # (N, C)
    return (
        [e.context for e in examples],
        [e.response for e in examples],
        true @ utilities,
        [e.meta["group"] for e in examples],
    )


def rank_eval(
    run: str | os.PathLike,
    data: str | os.PathLike,
    *,
    checkpoint: str = "best",
    rule: str = "expected-utility",
    batch_size: int = 64,
    source: str | None = None,
    ks: Sequence[int] = BEST_OF_K,
    out: str | os.PathLike | None = None,
) -> dict:
    """Score the candidates of ``data`` with ``run`` and measure the ranking per group.

    Returns (and writes to ``out`` as JSON, when given) ``{"format", "run", "model", "data",
    "rule", "source", "metrics", "counts"}``: ``metrics`` as
    :func:`~bayespref.ranking_metrics.compute_ranking_metrics` (best-of-K for ``ks``),
    ``counts`` as :func:`~bayespref.ranking_metrics.ranking_counts`.
    """
    contexts, responses, utilities, groups = read_candidate_sets(data, source)
    model_dir = ranker_model_dir(run, checkpoint)
    ranker = load_ranker(run, checkpoint=checkpoint)
    scores = ranker.score(contexts, responses, rule=rule, batch_size=batch_size)  # (N,)
    metrics = compute_ranking_metrics(scores, utilities, groups, ks)
    counts = ranking_counts(scores, utilities, groups, ks)
    report = {
        "format": RANK_EVAL_FORMAT,
        "run": str(run),
        "model": str(model_dir),
        "data": str(data),
        "rule": rule,
        "source": source,
        "metrics": metrics,
        "counts": counts,
    }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=1), encoding="utf-8")
        tmp.replace(out)
    logger.debug(  # the command prints the table; INFO would print this line twice
        "rank-eval %s on %s: pairwise accuracy %.3f, spearman %.3f, top-1 %.3f (%d groups)",
        run,
        data,
        metrics["pairwise_accuracy"],
        metrics["spearman"],
        metrics["top1"],
        counts["groups"],
    )
    return report
