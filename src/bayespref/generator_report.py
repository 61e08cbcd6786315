"""The report of a generator comparison (:func:`bayespref.generator_eval.evaluate_generators`):
``eval.json`` (the whole report, nan as null) and ``eval.md`` (one row per metric, one column
per generator, the paired win rate and utility difference below; with candidate sets, each
generator's own ranking accuracy on them)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .generator_eval import GENERATOR_METRICS, json_safe

ARROWS = {True: "↑", False: "↓", None: "(ref)"}
"""A metric's direction in the table: higher is better, lower is better, descriptive only."""


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _fmt_ci(d: dict) -> str:
    return f"{_fmt(d['mean'])} [{_fmt(d['low'])}, {_fmt(d['high'])}]"


def _row(name: str, report: dict) -> str:
    """One table row: the metric, its direction, then base and calibrated (with interval)."""
    cells = []
    for side in ("base", "calibrated"):
        value = report[side][name]
        cells.append(_fmt_ci(value) if isinstance(value, dict) else _fmt(value))
    return (
        f"| {name} | {ARROWS[GENERATOR_METRICS[name].higher_is_better]} | "
        + " | ".join(cells)
        + " |"
    )


def format_markdown(report: dict) -> str:
    """A short markdown table of the report: one row per metric, one column per generator."""
    lines = [
        f"Generator evaluation: {report['n']} contexts ({report['n_with_gold']} with gold), "
        f"judge {report['judge']}, {report['decoding']['method']} decoding.",
        "",
        "| metric | | base | calibrated |",
        "|---|---|---|---|",
    ]
    for name in ("utility", "gold_perplexity", "bleu", "rouge_l", "distinct_1", "distinct_2"):
        lines.append(_row(name, report))
    lines.append(_row("mean_length", report))
    w = report["paired"]["win_rate"]
    d = report["paired"]["utility_difference"]
    lines += [
        "",
        f"- win rate of calibrated over base (ties = 1/2) ↑: {_fmt(w['rate'])} "
        f"[{_fmt(w['low'])}, {_fmt(w['high'])}] 95% Wilson; "
        f"{w['wins']} wins, {w['ties']} ties, {w['losses']} losses",
        f"- utility difference, calibrated - base ↑: {_fmt_ci(d)} 95% t",
        f"- gold responses' utility (ref): {_fmt_ci(report['gold_utility'])}",
        "",
    ]
    if report.get("ranking"):
        lines += _ranking_lines(report["ranking"])
    return "\n".join(lines)


def _ranking_lines(ranking: dict) -> list[str]:
    """Each generator's own ranking accuracy on the candidate sets, per reference."""
    lines = [
        f"Each generator's own ranking of {ranking['sets']} candidate sets "
        f"({ranking['candidates']} candidates): share of pairs its P(y) = sum log p / "
        f"|y|^{ranking['length_penalty']:g} orders like the reference (ties 1/2; random 0.5).",
        "",
        "| reference | pairs | base | calibrated |",
        "|---|---|---|---|",
    ]
    for name, pairs in ranking["pairs"].items():
        key = f"rank_acc_{name}"
        base, calibrated = ranking["base"].get(key), ranking["calibrated"].get(key)
        lines.append(f"| {name} ↑ | {pairs} | {_fmt(base)} | {_fmt(calibrated)} |")
    return [*lines, ""]


def write_report(report: dict, output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``eval.json`` and ``eval.md`` into ``output_dir``; returns both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "eval.json", output_dir / "eval.md"
    json_path.write_text(json.dumps(json_safe(report), indent=2), encoding="utf-8")
    md_path.write_text(format_markdown(report), encoding="utf-8")
    return json_path, md_path
