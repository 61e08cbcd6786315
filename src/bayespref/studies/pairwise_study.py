"""Pairwise study: which reward-model loss recovers P*(A, B, tie) best, over several seeds.

The recipe, in :func:`run_pairwise_study`:

1. build the cells from the :class:`~.pairwise_study_config.PairwiseStudyConfig` (one
   ``train-pairwise`` run per row and seed, the test pairs as its validation split);
2. train each cell unless it has finished (:func:`.common.run_status`: a cell whose
   ``summary.json`` exists and whose saved ``config.yaml`` equals the cell's is reused, an
   interrupted one resumes, a folder holding another config is an error);
3. read each cell's LAST evaluation on the test pairs (``summary.json``'s ``final``) and
   aggregate over seeds: mean and 95% t half-width (:func:`bayespref.stats.t_interval`);
4. write ``results.json`` and ``report.md`` (:mod:`.pairwise_report`).

``report_only=True`` skips step 2 and reports whatever cells have finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from ..pairwise_metrics import PAIRWISE_METRICS
from ..stats import t_interval
from ..train_pairwise import train_pairwise
from .common import (
    empty_outcome,
    git_commit,
    save_study_record,
    train_cells,
    write_json,
)
from .pairwise_report import Interval, conclusions, write_report
from .pairwise_study_config import PairwiseCell, PairwiseStudyConfig, build_pairwise_cells

logger = logging.getLogger(__name__)


def finished_summaries(cells: list[PairwiseCell]) -> dict[str, dict]:
    """``{cell key: summary.json}`` of the cells that have finished."""
    out = {}
    for cell in cells:
        summary_file = cell.config().run_dir / "summary.json"
        if summary_file.is_file():
            out[cell.key] = json.loads(summary_file.read_text(encoding="utf-8"))
    return out


def aggregate(
    cells: list[PairwiseCell], summaries: dict[str, dict]
) -> dict[str, dict[str, Interval]]:
    """``{row: {metric: (mean, half_width, n)}}`` over the seeds of each row's finished cells,
    for the :data:`~bayespref.pairwise_metrics.PAIRWISE_METRICS` the cells report (last step)."""
    finals: dict[str, list[dict]] = {}
    for cell in cells:
        if cell.key in summaries:
            finals.setdefault(cell.row.name, []).append(summaries[cell.key]["final"])
    table: dict[str, dict[str, Interval]] = {}
    for row, seeds in finals.items():
        names = [m for m in PAIRWISE_METRICS if m in seeds[0]]
        table[row] = {m: (*t_interval([s.get(m) for s in seeds]), len(seeds)) for m in names}
    return table


@dataclasses.dataclass
class PairwiseStudyResult:
    study_dir: Path
    report: Path
    results: Path
    table: dict
    conclusions: list[str]
    outcome: dict


def run_pairwise_study(
    study: PairwiseStudyConfig,
    report_only: bool = False,
    train_overrides: list[str] | None = None,
    command: str | None = None,
    progress: bool = True,
) -> PairwiseStudyResult:
    """Train (or resume) every unfinished cell, then write ``results.json`` and ``report.md``
    in the study folder."""
    start = time.monotonic()
    cells = build_pairwise_cells(study, train_overrides)
    save_study_record(study, study.study_dir)
    outcome = empty_outcome()
    if not report_only:
        outcome = train_cells(
            cells, lambda cell: cell.config(), train_pairwise, "pairwise cells", progress
        )
    summaries = finished_summaries(cells)
    table = aggregate(cells, summaries)
    lines = conclusions(study, table)
    baseline = next(
        (s["train_mean_predictor"] for s in summaries.values() if "train_mean_predictor" in s),
        None,
    )
    record = {
        "study": study.name,
        "command": command,
        "commit": git_commit(),
        "wall_clock_s": time.monotonic() - start,
        "outcome": outcome,
        "cells_finished": len(summaries),
        "cells": len(cells),
        "table": {row: {m: list(v) for m, v in metrics.items()} for row, metrics in table.items()},
        "conclusions": lines,
        "train_vote_share_predictor": baseline,
        "per_seed": {
            row.name: {
                f"seed{c.seed}": summaries[c.key]["final"]
                for c in cells
                if c.row is row and c.key in summaries
            }
            for row in study.rows
        },
    }
    results = study.study_dir / "results.json"
    write_json(results, record, indent=2)
    report = write_report(study, record, table)
    logger.info("pairwise study %s: %s; report %s", study.name, outcome, report)
    return PairwiseStudyResult(study.study_dir, report, results, table, lines, outcome)
