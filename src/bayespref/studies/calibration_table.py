"""The calibration study's one table per task (issue 13) and its verdict, computed from the
results :func:`.calibration_study.evaluate_task` wrote; nothing here trains, decodes or judges.

:func:`table_rows`: one row per generator, in this order: every loss's PM-ranked calibration,
each sweep row, the controls, the DPO peer, then best-of-K reranking of the base (per
preference model and K, the judge's own pick as the ceiling, the top beam without reranking).
Each row holds its utility, the paired differences against the base and against each control
(95% t-intervals over the same contexts, :func:`bayespref.stats.mean_t_interval`), the gold
perplexity change against the base, and the generator's own ranking accuracy before and after
(on the calibration's held-out contexts from its ``summary.json``; on the evaluation contexts'
candidates when the study searched them); the gold perplexity change against each control; for
a sweep row, the paired difference against its loss's calibration at the study's own setting.

:func:`ranking_acceptance`: whether at least one PM-ranked calibration (a loss row or a sweep
row) beats the ``mle-only`` control beyond its 95% interval (the lower bound of the paired
difference above 0) with gold perplexity up by at most ``max_perplexity_rise`` against the base.
"""

from __future__ import annotations

import math
from typing import Any

from .calibration_study_config import matched_control_name
from .common import is_finite

CONTROL = "mle-only"
RANKED_KINDS = ("loss", "sweep")  # the PM-ranked calibrations the verdict is about

NO_INTERVAL = {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}


def beats(interval: dict | None) -> bool:
    """Whether a paired difference is above 0 beyond its interval (lower bound > 0)."""
    return interval is not None and is_finite(interval.get("low")) and interval["low"] > 0


def held_out_ranking(report: dict) -> dict[str, list]:
    """``{reference: [before, after]}`` of the generator's own ranking accuracy on the
    calibration's held-out contexts (its ``summary.json``: ``pm``, ``oracle``); empty when the
    run logged none (a DPO run, a calibration without ``eval_ranking``)."""
    summary = report.get("calibration") or {}
    out = {}
    for reference in ("pm", "oracle"):
        before = summary.get(f"initial_eval_rank_acc_{reference}")
        after = summary.get(f"final_eval_rank_acc_{reference}")
        if before is not None or after is not None:
            out[reference] = [before, after]
    return out


def eval_ranking(result: dict, name: str, pm: str | None) -> dict[str, list]:
    """``{"judge": [base, after], "pm": [base, after]}``: the generator's own ranking accuracy
    on the evaluation contexts' candidates against the judge and against the preference model
    that ranked its training candidates, beside the base generator's under the same ``P(y)``."""
    ranking = (result.get("generator_ranking") or {}).get("generators", {}).get(name)
    if ranking is None:
        return {}
    out = {}
    for label, reference in (("judge", "judge"), ("pm", pm)):
        key = f"rank_acc_{reference}"
        if reference is not None and key in ranking["after"]:
            out[label] = [ranking["base"].get(key), ranking["after"][key]]
    return out


def table_row(result: dict, name: str, kind: str, report: dict, max_rise: float) -> dict:
    """One generator's row (see the module docstring)."""
    pm = report.get("pm", name if kind == "loss" else None)
    change = report.get("perplexity_change", math.nan)
    vs_controls = {c: v["utility_difference"] for c, v in report.get("vs_controls", {}).items()}
    row: dict[str, Any] = {
        "name": name,
        "kind": kind,
        "pm": pm,
        "utility": report["calibrated"]["utility"],
        "vs_base": report["paired"]["utility_difference"],
        "win_rate": report["paired"]["win_rate"],
        "vs_controls": vs_controls,
        "gold_perplexity": report["calibrated"]["gold_perplexity"],
        "perplexity_change": change,
        "held_out_ranking": held_out_ranking(report),
        "eval_ranking": eval_ranking(result, name, pm),
    }
    gold = row["gold_perplexity"]
    row["perplexity_vs_controls"] = {
        control: gold / ppl - 1
        for control, rep in result.get("controls", {}).items()
        if control != name
        and is_finite(ppl := rep["calibrated"]["gold_perplexity"])
        and ppl > 0
        and is_finite(gold)
    }
    # a sweep row against its loss's calibration at the study's setting (paired)
    row["vs_setting"] = report.get("vs_setting")
    row["beats_control"] = beats(vs_controls.get(CONTROL))
    row["perplexity_ok"] = is_finite(change) and change <= max_rise
    row["passes"] = kind in RANKED_KINDS and row["beats_control"] and row["perplexity_ok"]
    return row


def best_of_k_kind(report: dict) -> str:
    """``best-of-k`` (a preference model's pick), ``ceiling`` (the judge's) or ``top-beam``."""
    picker = report.get("picker")
    return "ceiling" if picker == "judge" else "top-beam" if picker is None else "best-of-k"


def table_rows(result: dict, max_rise: float) -> list[dict]:
    """Every generator of one task's results as a table row, in the module docstring's order."""
    groups = [
        ("loss", result.get("losses", {})),
        ("sweep", result.get("sweep", {})),
        ("control", result.get("controls", {})),
        ("dpo", result.get("peers", {})),
    ]
    rows = [
        table_row(result, name, kind, report, max_rise)
        for kind, reports in groups
        for name, report in reports.items()
    ]
    for name, report in (result.get("best_of_k") or {}).items():
        rows.append(table_row(result, name, best_of_k_kind(report), report, max_rise))
    return rows


def ranking_acceptance(rows: list[dict], control: str = CONTROL) -> dict:
    """The issue's verdict from the table: ``accepted`` (None without the control), the passing
    rows, the PM-ranked calibration with the largest mean difference against the control, the
    peers that beat the control, and the ceiling of reranking against it."""
    ranked = [r for r in rows if r["kind"] in RANKED_KINDS and control in r["vs_controls"]]
    if not any(r["kind"] == "control" and r["name"] == control for r in rows) or not ranked:
        return {"control": control, "accepted": None, "passing": [], "best": None}

    def mean(row: dict) -> float:
        value = row["vs_controls"][control]["mean"]
        return value if is_finite(value) else -math.inf

    best = max(ranked, key=mean)
    others = [r for r in rows if r["kind"] not in (*RANKED_KINDS, "control")]
    return {
        "control": control,
        "accepted": any(r["passes"] for r in ranked),
        "passing": [r["name"] for r in ranked if r["passes"]],
        "best": best["name"],
        "best_vs_control": best["vs_controls"][control],
        # the same control at the best row's variant, when the study ran it (same budget)
        "best_vs_matched_control": (
            best["vs_controls"].get(matched)
            if (matched := matched_control_name(control, best["name"]))
            else None
        ),
        "best_perplexity_change": best["perplexity_change"],
        "peers_beating_control": [r["name"] for r in others if r["beats_control"]],
        "ceiling_vs_control": {
            r["name"]: r["vs_controls"].get(control, NO_INTERVAL)
            for r in others
            if r["kind"] == "ceiling"
        },
    }
