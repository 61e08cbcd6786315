"""The pairwise study's report: the table (mean ± 95% t half-width over seeds, the best mean of
each column in bold), which row wins each metric and whether two rows differ beyond the seed
noise (:func:`conclusions`), and ``report.md`` (:func:`write_report`).

"Beyond the seed noise" means the two 95% t-intervals over seeds do not overlap
(:func:`intervals_apart`), the loss study's rule. Nothing here trains or evaluates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..pairwise_metrics import PAIRWISE_METRICS
from .common import format_mean_half_width
from .pairwise_study_config import HeadToHeadSpec, PairwiseStudyConfig

Interval = tuple[float, float, int]
"""(mean, 95% t half-width, number of seeds) of one metric of one row."""

TRUTH_METRIC = "kl_true"
"""The metric against the generating P* (synthetic pairs): the one that says which loss
recovers P* best."""


def arrow(metric: str) -> str:
    """↑ when higher is better, ↓ when lower is better."""
    return "↑" if PAIRWISE_METRICS[metric].higher_is_better else "↓"


def intervals_apart(a: Interval, b: Interval) -> bool | None:
    """Whether the intervals ``mean ± half_width`` of ``a`` and ``b`` are disjoint; None when
    either half-width is unknown (one seed)."""
    (m1, h1, _), (m2, h2, _) = a, b
    if math.isnan(h1) or math.isnan(h2):
        return None
    return m1 + h1 < m2 - h2 or m2 + h2 < m1 - h1


def noise_verdict(apart: bool | None) -> str:
    if apart is None:
        return "no interval with one seed, so the seed noise is unknown"
    if apart:
        return "the 95% intervals do not overlap: beyond the seed noise"
    return "the 95% intervals overlap: within the seed noise"


def ranked(metric: str, table: dict[str, dict[str, Interval]]) -> list[str]:
    """Rows with a finite mean of ``metric``, best first (by the metric's direction)."""
    valid = [r for r, m in table.items() if metric in m and not math.isnan(m[metric][0])]
    sign = -1.0 if PAIRWISE_METRICS[metric].higher_is_better else 1.0
    return sorted(valid, key=lambda r: sign * table[r][metric][0])


def _value(interval: Interval) -> str:
    return format_mean_half_width(interval[0], interval[1])


def best_row_line(metric: str, table: dict[str, dict[str, Interval]]) -> str:
    """Which row is best on ``metric``, the runner-up, and whether the gap beats the noise."""
    order = ranked(metric, table)
    if len(order) < 2:
        return ""
    best, second = order[0], order[1]
    a, b = table[best][metric], table[second][metric]
    direction = "higher" if PAIRWISE_METRICS[metric].higher_is_better else "lower"
    lead = "Recovers P* best" if metric == TRUTH_METRIC else "Best"
    return (
        f"{lead} by `{metric}` ({direction} is better): `{best}` ({_value(a)}), ahead of "
        f"`{second}` ({_value(b)}); {noise_verdict(intervals_apart(a, b))}."
    )


def head_to_head_line(
    spec: HeadToHeadSpec, metric: str, table: dict[str, dict[str, Interval]]
) -> str:
    """``a`` vs ``b`` on ``metric``: which is better and whether beyond the seed noise."""
    first, second = spec.rows
    if metric not in table.get(first, {}) or metric not in table.get(second, {}):
        return f"`{first}` vs `{second}` on `{metric}`: not measured (cells missing)."
    a, b = table[first][metric], table[second][metric]
    higher = PAIRWISE_METRICS[metric].higher_is_better
    direction = "higher" if higher else "lower"
    if a[0] == b[0]:
        winner = "neither is better"
    else:
        better = first if (a[0] > b[0]) == higher else second
        apart = intervals_apart(a, b)
        verdict = "beats" if apart else "is ahead of"
        loser = second if better == first else first
        winner = f"`{better}` {verdict} `{loser}`; {noise_verdict(apart)}"
    return (
        f"`{first}` vs `{second}` on `{metric}` ({direction} is better): {_value(a)} vs "
        f"{_value(b)}: {winner}."
    )


def conclusions(study: PairwiseStudyConfig, table: dict[str, dict[str, Interval]]) -> list[str]:
    """The report's computed sentences: the row nearest P* (``kl_true``, when measured), the
    head-to-head comparisons, then the best row of every other metric."""
    metrics = [m for m in PAIRWISE_METRICS if any(m in row for row in table.values())]
    lines = [best_row_line(TRUTH_METRIC, table)] if TRUTH_METRIC in metrics else []
    if isinstance(study.head_to_head, HeadToHeadSpec):
        lines += [
            head_to_head_line(study.head_to_head, m, table) for m in study.head_to_head.metrics
        ]
    lines += [best_row_line(m, table) for m in metrics if m != TRUTH_METRIC]
    return [line for line in lines if line]


def table_markdown(study: PairwiseStudyConfig, table: dict[str, dict[str, Interval]]) -> str:
    """One line per row with finished cells, one column per metric (best mean in bold)."""
    metrics = [m for m in PAIRWISE_METRICS if any(m in row for row in table.values())]
    best = {m: next(iter(ranked(m, table)), "") for m in metrics}  # "" when none is finite
    lines = [
        "| loss | " + " | ".join(f"{m} {arrow(m)}" for m in metrics) + " | seeds |",
        "|---|" + "---|" * (len(metrics) + 1),
    ]
    for row in study.rows:
        if row.name not in table:
            continue
        cells = []
        for m in metrics:
            text = _value(table[row.name][m]) if m in table[row.name] else "–"
            cells.append(f"**{text}**" if best[m] == row.name else text)
        n = max(v[2] for v in table[row.name].values())
        lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def write_report(
    study: PairwiseStudyConfig, record: dict, table: dict[str, dict[str, Interval]]
) -> Path:
    """``<study_dir>/report.md`` from the study's record (command, commit, outcome, the
    train-vote-share predictor, conclusions) and the aggregated table."""
    rows = "\n".join(
        f"- `{r.name}`: loss.name={r.loss}" + "".join(f", {o}" for o in r.overrides)
        for r in study.rows
    )
    outcome = ", ".join(f"{k} {v}" for k, v in record["outcome"].items())
    parts = [
        f"# Pairwise study `{study.name}`",
        f"Command: `{record['command'] or 'run_pairwise_study (Python)'}`  \n"
        f"git commit: `{record['commit']}`  \n"
        f"Cells finished: {record['cells_finished']} of {record['cells']} "
        f"(this run: {outcome}); wall clock of this run: {_duration(record['wall_clock_s'])}.",
        f"Base config `{study.config}`; every cell: "
        + (", ".join(f"`{o}`" for o in study.overrides) or "no overrides")
        + f". Seeds {list(study.seeds)} (initialisation and batch order). Test pairs "
        f"`{json.dumps(study.test)}`: they replace the validation pairs and the table reads the metrics of "
        "the LAST step on them (no checkpoint is selected on them). Mean ± 95% t half-width "
        "over the seeds; the best mean of each column in bold; ↑ higher is better, ↓ lower. "
        "`kl_true` compares with the generating P*, the other metrics with the annotators' "
        "vote share.",
        table_markdown(study, table),
        "Rows:\n" + rows,
    ]
    baseline = record.get("train_vote_share_predictor")
    if baseline:
        values = ", ".join(
            f"{m} {baseline[m]:.4f}"
            for m in PAIRWISE_METRICS
            if isinstance(baseline.get(m), float) and not math.isnan(baseline[m])
        )
        parts.append(f"The predictor that always outputs the training vote share: {values}.")
    if record["conclusions"]:
        parts.append("## What it says\n\n" + "\n".join(f"- {c}" for c in record["conclusions"]))
    path = study.study_dir / "report.md"
    path.write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    return path
