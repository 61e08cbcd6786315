"""Loss study: every loss on every data set over several seeds, cached, with a report.

A study is a grid of *cells* (:mod:`.loss_study_config`), each one ordinary training run
(:func:`bayespref.train.train`). The recipe, in :func:`run_study`:

1. build the cells from the :class:`~.loss_study_config.StudyConfig`;
2. train each cell unless it has finished: a cell whose ``summary.json`` exists and whose saved
   ``config.yaml`` equals the cell's config is skipped; a cell with a run directory but no
   summary (interrupted) is continued with ``train(config, resume=True)``; a cell whose saved
   config differs is an error (delete it or rename the study) — :func:`.common.run_status`;
3. evaluate each cell's best checkpoint on the data set's test split, raw and after post-hoc
   temperature scaling fitted on the run's held-out (validation) split; the result is cached
   in ``<cell>/study_eval.json`` keyed by the checkpoint and test set;
4. aggregate over seeds (mean and 95% t-interval), draw the plots and write ``report.md``
   (:mod:`.loss_report`).

``report_only=True`` skips step 2 and uses whatever cells have finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import metrics as metrics_lib
from ..annotator_metrics import ANNOTATOR_METRICS
from ..config import TrainConfig, to_dict
from ..data.schema import AnnotatedDataset
from ..data.splits import load_split, load_train_valid
from ..evaluation import annotator_results, encode_split, predict_logits
from ..model import PreferenceModel
from ..ranking_metrics import RANKING_METRICS, compute_ranking_metrics
from ..stats import t_interval
from ..train import train
from .common import (
    empty_outcome,
    save_study_record,
    sha256_json,
    train_cells,
    write_json,
)
from .loss_report import write_plots, write_report
from .loss_study_config import Cell, StudyConfig, build_cells

logger = logging.getLogger(__name__)

EVAL_FILE = "study_eval.json"

RANKING_PREFIX = "ranking_"
"""Result keys of the candidate-ranking metrics (:func:`candidate_ranking`): ``ranking_`` +
a name of :data:`bayespref.ranking_metrics.RANKING_METRICS`."""


# ---------------------------------------------------------------------------------------------
# Training the cells


# ---------------------------------------------------------------------------------------------
# Temperature scaling


def soft_ce_of_logits(logits: np.ndarray | torch.Tensor, targets: np.ndarray, temperature=1.0):
    """Mean soft cross-entropy ``-sum_l t log softmax(z / T)`` over items (float)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / float(temperature)
    log_q = torch.log_softmax(z, dim=-1)  # (N, C)
    return float(-(torch.as_tensor(targets, dtype=torch.float64) * log_q).sum(-1).mean())


def fit_temperature(
    logits: np.ndarray | torch.Tensor,
    targets: np.ndarray,
    bounds: tuple[float, float] = (0.01, 100.0),
    tol: float = 1e-5,
) -> float:
    """The scalar ``T`` minimising the held-out soft CE of ``softmax(logits / T)``.

    The soft CE is convex in ``1 / T`` (log-sum-exp of a linear function minus a linear one),
    hence unimodal in ``log T``: golden-section search over ``log T`` in ``bounds`` finds the
    minimum to ``tol`` (in log T).
    """
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2

    def f(log_t: float) -> float:
        return soft_ce_of_logits(logits, targets, math.exp(log_t))

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    best = (lo + hi) / 2
    # Never worse than no scaling (T = 1 may sit outside a narrow bracket).
    return math.exp(best) if f(best) <= f(0.0) else 1.0


# ---------------------------------------------------------------------------------------------
# Evaluating a cell


def _test_fingerprint(cell: Cell, config: TrainConfig) -> str:
    spec = {
        "test": cell.dataset.test,
        "max_test_items": cell.dataset.max_test_items,
        "data": to_dict(config.data),
    }
    return sha256_json(spec)[:16]


def load_test_split(cell: Cell, config: TrainConfig) -> AnnotatedDataset:
    """The data set's test split (seeded subsample shared by every cell of the data set)."""
    dataset = load_split(config.data, cell.dataset.test, "test")
    limit = cell.dataset.max_test_items
    if limit is not None and len(dataset) > limit:
        keep = np.sort(np.random.default_rng(0).permutation(len(dataset))[:limit])
        dataset = dataset.subset(keep.tolist())
    return dataset


def evaluate_cell(cell: Cell, study: StudyConfig, force: bool = False) -> dict | None:
    """Test metrics of a finished cell, raw and temperature-scaled, cached in the cell dir.

    Returns None when the cell has not finished. The cache is reused when the best checkpoint
    (its step, from ``summary.json``) and the test set are unchanged.
    """
    config = cell.config(study)
    run_dir = config.run_dir
    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    fingerprint = {
        "best_step": summary.get("best_step"),
        "steps": summary.get("steps"),
        "test": _test_fingerprint(cell, config),
        "metrics": 2,  # 2: with the perspectivist metrics and wasserstein (issue 14)
    }
    cache = run_dir / EVAL_FILE
    if cache.is_file() and not force:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("fingerprint") == fingerprint:
            return cached

    model = PreferenceModel.from_run(run_dir)
    model.eval()
    _, heldout_set = load_train_valid(config.data, config.seed)
    test_set = load_test_split(cell, config)
    heldout = encode_split(model, heldout_set, config.data.alpha, "heldout")
    test = encode_split(model, test_set, config.data.alpha, "test")
    heldout_logits = predict_logits(model, heldout, study.eval_batch_size).numpy()  # (N, C)
    test_logits = predict_logits(model, test, study.eval_batch_size).numpy()  # (M, C)

    temperature = fit_temperature(heldout_logits, heldout.empirical)
    out = {"fingerprint": fingerprint, "cell": cell.key, "n_test": len(test)}
    out["temperature"] = temperature
    out["heldout_soft_ce"] = {
        "raw": soft_ce_of_logits(heldout_logits, heldout.empirical),
        "scaled": soft_ce_of_logits(heldout_logits, heldout.empirical, temperature),
    }
    for kind, t in (("raw", 1.0), ("scaled", temperature)):
        q = torch.softmax(torch.as_tensor(test_logits, dtype=torch.float64) / t, -1).numpy()
        results = metrics_lib.compute_metrics(
            q, test.empirical, test.labels, true_distribution=test.true_distribution
        )
        results.update(annotator_results(model, test, q, study.eval_batch_size))
        results.update(candidate_ranking(test_set, q))
        out[kind] = results
    write_json(cache, out, indent=2)
    return out


def candidate_ranking(dataset: AnnotatedDataset, q: np.ndarray) -> dict[str, float]:
    """How the model ranks each context's candidates (issue 13), when the test items are
    candidate sets: every item has a ``group`` (the context it answers, native ``group``) and
    a known ``p*``. Scores ``S = q u`` (expected utility) against the oracle's ``p* u``, by
    :func:`bayespref.ranking_metrics.compute_ranking_metrics` within groups (the file's order is
    the candidates' order for best-of-K); ``{}`` for any other test set. ``q`` (N, C)."""
    groups = [example.meta.get("group") for example in dataset.examples]
    truth = dataset.true_distributions()  # (N, C) or None
    if truth is None or not groups or any(g is None for g in groups):
        return {}
    utilities = np.asarray(dataset.label_space.utilities, dtype=np.float64)  # (C,)
    metrics = compute_ranking_metrics(q @ utilities, truth @ utilities, groups)
    return {RANKING_PREFIX + name: value for name, value in metrics.items()}


# ---------------------------------------------------------------------------------------------
# Aggregation and the recipe


def aggregate(cells: list[Cell], results: dict[str, dict]) -> dict:
    """``{dataset: {row: {kind: {metric: (mean, half_width, n)}}}}`` over seeds."""
    grouped: dict[str, dict[str, list[dict]]] = {}
    for cell in cells:
        result = results.get(cell.key)
        if result is None:
            continue
        grouped.setdefault(cell.dataset.name, {}).setdefault(cell.row, []).append(result)
    table: dict = {}
    for dataset, rows in grouped.items():
        for row, seeds in rows.items():
            entry: dict[str, Any] = {}
            for kind in ("raw", "scaled"):
                known = [
                    *metrics_lib.METRICS,
                    *ANNOTATOR_METRICS,
                    *(RANKING_PREFIX + m for m in RANKING_METRICS),
                ]
                names = [m for m in known if m in seeds[0][kind]]
                entry[kind] = {
                    m: (*t_interval([s[kind].get(m) for s in seeds]), len(seeds)) for m in names
                }
            entry["temperature"] = (*t_interval([s["temperature"] for s in seeds]), len(seeds))
            table.setdefault(dataset, {})[row] = entry
    return table


@dataclasses.dataclass
class StudyResult:
    study_dir: Path
    report: Path
    plots: list[Path]
    table: dict
    outcome: dict


def run_study(
    study: StudyConfig,
    report_only: bool = False,
    train_overrides: list[str] | None = None,
    command: str | None = None,
    progress: bool = True,
) -> StudyResult:
    """Train (or resume) every unfinished cell, evaluate each, and write plots and report."""
    cells = build_cells(study, train_overrides)
    save_study_record(study, study.study_dir)
    outcome = empty_outcome()
    if not report_only:
        outcome = train_cells(cells, lambda cell: cell.config(study), train, progress=progress)
    results = {}
    for cell in cells:
        result = evaluate_cell(cell, study)
        if result is not None:
            results[cell.key] = result
    outcome["evaluated"] = len(results)
    table = aggregate(cells, results)
    write_json(study.study_dir / "results.json", table, indent=2)
    plots = write_plots(study, cells, table)
    report = write_report(study, cells, table, plots, command)
    logger.info("study %s: %s; report %s", study.name, outcome, report)
    return StudyResult(study.study_dir, report, plots, table, outcome)
