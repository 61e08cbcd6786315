"""The calibration study's report: the acceptance verdict per task (:func:`acceptance`), the
plots (:func:`write_plots`) and ``report.md`` (:func:`write_report`): per task the generator
table against the base, each loss against the controls, the ranking quality of each preference
model on the shared candidates, a conclusion computed from the numbers, and the one table of
every generator, sweep row and peer with issue 13's verdict (:func:`all_generators_table`, from
:mod:`.calibration_table`).

Everything here reads the results :func:`.calibration_study.evaluate_task` computed; nothing
trains, decodes or judges.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .calibration_study_config import (
    CONTROL_TEXT,
    CalibrationStudyConfig,
    matched_control_name,
)
from .calibration_table import CONTROL
from .common import format_interval, format_number, git_commit, is_finite, save_figure

# ---------------------------------------------------------------------------------------------
# The acceptance test


def acceptance(task_result: dict, max_rise: float) -> dict:
    """Best loss by mean paired utility difference; whether it (and which losses) pass: the
    interval's lower bound above 0 and gold perplexity up by at most ``max_rise``."""
    losses = task_result["losses"]
    if not losses:
        return {"best": None, "passing": [], "accepted": False}
    diff = {k: r["paired"]["utility_difference"] for k, r in losses.items()}
    ranked = sorted(diff, key=lambda k: -(diff[k]["mean"] if is_finite(diff[k]["mean"]) else -1e9))
    passing = [
        k
        for k in ranked
        if is_finite(diff[k]["low"])
        and diff[k]["low"] > 0
        and is_finite(losses[k]["perplexity_change"])
        and losses[k]["perplexity_change"] <= max_rise
    ]
    best = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    return {
        "best": best,
        "best_difference": diff[best],
        "runner_up": runner_up,
        "margin_over_runner_up": (
            diff[best]["mean"] - diff[runner_up]["mean"] if runner_up else None
        ),
        "passing": passing,
        "accepted": best in passing,
    }


# ---------------------------------------------------------------------------------------------
# Plots


def write_plots(study: CalibrationStudyConfig, results: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = study.study_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in results if results[t]["losses"]]
    if not tasks:
        return []
    out = []
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        res = results[task]
        generators = {
            **res["losses"], **res.get("sweep", {}), **res.get("controls", {}),
            **res.get("peers", {}),
        }  # fmt: skip
        losses = list(generators)
        d = [generators[k]["paired"]["utility_difference"] for k in losses]
        means = np.array([x["mean"] for x in d], dtype=float)
        low = np.array([x["low"] if is_finite(x["low"]) else x["mean"] for x in d], dtype=float)
        high = np.array([x["high"] if is_finite(x["high"]) else x["mean"] for x in d], dtype=float)
        ax.errorbar(range(len(losses)), means, yerr=[means - low, high - means], fmt="o", capsize=4)
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        labels = [f"{k} (control)" if k in res.get("controls", {}) else k for k in losses]
        ax.set_xticks(range(len(losses)), labels, rotation=30, ha="right")
        ax.set_title(f"{task}: utility, calibrated - base (95% CI)")
        ax.set_ylabel("paired utility difference")
    out.append(save_figure(fig, plots_dir / "utility_difference.png"))

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        losses = list(results[task]["losses"])
        width = 0.27
        for i, (key, label) in enumerate(
            [
                ("spearman", "Spearman vs judge"),
                ("top1_agreement", "top-1 agreement"),
                ("top2_tie_1e-3", "top-2 tie (<1e-3)"),
            ]
        ):
            values = [results[task]["losses"][k]["ranking"][key] for k in losses]
            values = [v if is_finite(v) else 0.0 for v in values]
            ax.bar(np.arange(len(losses)) + (i - 1) * width, values, width, label=label)
        ax.set_xticks(range(len(losses)), losses, rotation=30, ha="right")
        ax.set_title(f"{task}: PM ranking of the shared candidates")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.legend(fontsize=7)
    out.append(save_figure(fig, plots_dir / "ranking_agreement.png"))
    return out


# ---------------------------------------------------------------------------------------------
# report.md


def write_report(
    study: CalibrationStudyConfig, results: dict, plots: list[Path], command: str | None
) -> Path:
    """``report.md``: per task, the generator table, the ranking table and the conclusion."""
    lines = [f"# Calibration study: {study.name}", ""]
    lines += [
        f"- command: `{command or '(python API)'}`",
        f"- git commit: `{git_commit()}`",
        f"- base generator: `{study.generator.get('name', 'smollm2-135m-instruct')}`; "
        f"losses: {', '.join(study.losses)}",
        f"- evaluation decoding: {study.eval_decoding}, seed {study.seed}",
        f"- acceptance: the paired utility difference's 95% interval above 0 and gold "
        f"perplexity up by at most {study.max_perplexity_rise:.0%}",
        "",
    ]
    for task in study.tasks:
        res = results.get(task.name)
        if res is None:
            continue
        acc = res["acceptance"]
        lines += [
            f"## {task.name}",
            "",
            f"{res['n']} held-out contexts, {res['train_contexts']} training contexts; "
            f"judge: {res['judge']}.",
            "",
            "| generator | utility ↑ (95% CI) | Δ utility vs base ↑ (95% CI) | win rate ↑ "
            "(95% Wilson) | gold ppl ↓ | Δ ppl | BLEU ↑ | ROUGE-L ↑ | distinct-1 ↑ | "
            "distinct-2 ↑ | length |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        if res["base"] is not None:
            b = res["base"]
            lines.append(
                f"| base | {format_interval(b['utility'])} | - | - | {format_number(b['gold_perplexity'], 2)} | - | "
                f"{format_number(b['bleu'], 2)} | {format_number(b['rouge_l'])} | {format_number(b['distinct_1'])} | "
                f"{format_number(b['distinct_2'])} | {format_number(b['mean_length'], 1)} |"
            )
        rows = [*res["losses"].items()]
        rows += [(f"{k} (control)", r) for k, r in res.get("controls", {}).items()]
        for loss, r in rows:
            c, w = r["calibrated"], r["paired"]["win_rate"]
            change = r["perplexity_change"]
            lines.append(
                f"| {loss} | {format_interval(c['utility'])} | {format_interval(r['paired']['utility_difference'])} | "
                f"{format_number(w['rate'], 3)} [{format_number(w['low'], 3)}, {format_number(w['high'], 3)}] | "
                f"{format_number(c['gold_perplexity'], 2)} | "
                f"{(f'{change:+.1%}' if is_finite(change) else '-')} | {format_number(c['bleu'], 2)} | "
                f"{format_number(c['rouge_l'])} | {format_number(c['distinct_1'])} | {format_number(c['distinct_2'])} | "
                f"{format_number(c['mean_length'], 1)} |"
            )
        missing = [loss for loss in study.losses if loss not in res["losses"]]
        missing += [c for c in study.controls if c not in res.get("controls", {})]
        if missing:
            lines.append(f"\nNot finished (left out): {', '.join(missing)}.")
        gold = res.get("gold_utility")
        if gold and is_finite(gold.get("mean")):
            lines += [
                "",
                f"The gold replies' own utility under this judge: {format_interval(gold)}.",
            ]
        # the study's controls (a control at a variant's settings is in the sweep's tables)
        for control in (c for c in study.controls if c in res.get("controls", {})):
            lines += [
                "",
                f"Each loss's generator against the `{control}` control ({CONTROL_TEXT[control]}), "
                "paired on the same contexts: what the preference model's ranking adds.",
                "",
                f"| loss | Δ utility vs {control} ↑ (95% CI) | win rate vs {control} ↑ "
                "(95% Wilson) |",
                "|---|---|---|",
            ]
            for loss, r in res["losses"].items():
                v = r.get("vs_controls", {}).get(control)
                if v is None:
                    continue
                w = v["win_rate"]
                lines.append(
                    f"| {loss} | {format_interval(v['utility_difference'])} | {format_number(w['rate'], 3)} "
                    f"[{format_number(w['low'], 3)}, {format_number(w['high'], 3)}] |"
                )
        lines += [
            "",
            "Ranking of the shared candidates by each loss's preference model, against the "
            "judge's ranking of the same texts:",
            "",
            "| loss | sets | top-2 tie <1e-6 | top-2 tie <1e-3 | mean spread | Spearman vs judge "
            "| top-1 agreement | pairwise agreement |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for loss, r in res["losses"].items():
            q = r["ranking"]
            lines.append(
                f"| {loss} | {q['sets']}/{q['sets_total']} | {format_number(q['top2_tie_1e-6'], 3)} | "
                f"{format_number(q['top2_tie_1e-3'], 3)} | {format_number(q['mean_spread'])} | "
                f"{format_number(q['spearman'], 3)} ({q['spearman_sets']} sets) | "
                f"{format_number(q['top1_agreement'], 3)} | {format_number(q['pairwise_agreement'], 3)} |"
            )
        lines += ["", _conclusion(task.name, acc, res, study.max_perplexity_rise), ""]
        lines += all_generators_table(res, study.max_perplexity_rise)
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    path = study.study_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _conclusion(task: str, acc: dict, res: dict, max_rise: float) -> str:
    if acc["best"] is None:
        return f"**{task}**: no calibrated generator finished yet."
    best, d = acc["best"], acc["best_difference"]
    change = res["losses"][best]["perplexity_change"]
    text = (
        f"**{task}**: the best generator comes from `{best}` (utility difference "
        f"{format_interval(d)}; gold perplexity {change:+.1%})"
        if is_finite(change)
        else f"**{task}**: the best generator comes from `{best}` (utility difference {format_interval(d)})"
    )
    if acc["runner_up"] is not None and acc["margin_over_runner_up"] == 0:
        text += f", tied with `{acc['runner_up']}`"
    elif acc["runner_up"] is not None:
        text += f", {format_number(acc['margin_over_runner_up'])} above `{acc['runner_up']}`"
    text += ". "
    if acc["accepted"]:
        text += (
            f"It beats the base by more than the interval with gold perplexity up by at most "
            f"{max_rise:.0%}: **acceptance met**."
        )
    else:
        why = []
        if not (is_finite(d["low"]) and d["low"] > 0):
            why.append("the interval of its utility difference reaches 0 or below")
        if not (is_finite(change) and change <= max_rise):
            why.append(f"its gold perplexity rose by more than {max_rise:.0%}")
        text += f"**Acceptance not met** ({'; '.join(why)})."
    if acc["passing"]:
        text += f" Losses that pass: {', '.join(acc['passing'])}."
    for control, v in res["losses"][best].get("vs_controls", {}).items():
        d = v["utility_difference"]
        if is_finite(d["low"]) and d["low"] > 0:
            verdict = "the ranking adds utility beyond the interval"
        elif is_finite(d["high"]) and d["high"] < 0:
            verdict = "the control is better beyond the interval"
        else:
            verdict = "no difference beyond the interval: the ranking adds nothing measurable"
        text += f" Against the `{control}` control: {format_interval(d)} ({verdict})."
    return text


# ---------------------------------------------------------------------------------------------
# The one table (issue 13)


def _before_after(pair: list | None) -> str:
    if not pair:
        return "-"
    return f"{format_number(pair[0], 3)} → {format_number(pair[1], 3)}"


def _rankings(ranking: dict, labels: tuple[str, str]) -> str:
    parts = [_before_after(ranking.get(label)) for label in labels]
    return "-" if parts == ["-", "-"] else "; ".join(parts)


def all_generators_table(res: dict, max_rise: float) -> list[str]:
    """The markdown of one task's table (:func:`.calibration_table.table_rows`) and its verdict
    (:func:`.calibration_table.ranking_acceptance`); nothing when the task has no row."""
    rows = res.get("table") or []
    if not rows:
        return []
    lines = [
        "### Every generator in one table",
        "",
        f"Each generator against the base and against `{CONTROL}`, paired on the same "
        f"{res['n']} contexts (95% t-intervals); gold perplexity change against the base; the "
        "generator's own ranking accuracy (the share of candidate pairs its sum log p / |y|^a "
        "orders like the reference), before → after: on the calibration's held-out training "
        "contexts against its PM and the oracle (summary.json), and on the evaluation contexts' "
        "candidates against the judge and its PM (before: the base generator under the same "
        f"P(y)); gold perplexity change against the base and against `{CONTROL}`. Best-of-K rows rerank the base generator's K highest beams without training; "
        "`(judge)` is the judge's own pick, the ceiling of reranking.",
        "",
        f"| generator | kind | ranked by | utility ↑ (95% CI) | Δ vs base ↑ (95% CI) | "
        f"Δ vs {CONTROL} ↑ (95% CI) | Δ gold ppl vs base; {CONTROL} | "
        "own ranking, held-out: PM; oracle | "
        "own ranking, eval: judge; PM | passes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        change = r["perplexity_change"]
        vs_control = r["vs_controls"].get(CONTROL)
        passes = ("yes" if r["passes"] else "no") if r["kind"] in ("loss", "sweep") else "-"
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['pm'] or '-'} | {format_interval(r['utility'])} | "
            f"{format_interval(r['vs_base'])} | "
            f"{format_interval(vs_control) if vs_control else '-'} | "
            f"{_ppl_changes(change, r.get('perplexity_vs_controls', {}).get(CONTROL))} | "
            f"{_rankings(r['held_out_ranking'], ('pm', 'oracle'))} | "
            f"{_rankings(r['eval_ranking'], ('judge', 'pm'))} | {passes} |"
        )
    lines += ["", _ranking_verdict(res.get("ranking_acceptance") or {}, rows, max_rise), ""]
    return lines + sweep_vs_setting_table(rows)


def _ppl_changes(vs_base: float, vs_control: float | None) -> str:
    parts = [f"{v:+.1%}" if v is not None and is_finite(v) else "-" for v in (vs_base, vs_control)]
    return "-" if parts == ["-", "-"] else "; ".join(parts)


def sweep_vs_setting_table(rows: list[dict]) -> list[str]:
    """Each sweep row against its loss's calibration at the study's own setting, paired on the
    same contexts: what the variant changes (nothing when no sweep row has that comparison)."""
    swept = [r for r in rows if r["kind"] in ("sweep", "control") and r.get("vs_setting")]
    if not swept:
        return []
    lines = [
        "#### Sweep rows against the study's setting",
        "",
        "Each sweep row `<loss>+<variant>` against `<loss>` (the same preference model at the "
        "study's own calibration settings), paired on the same contexts: what the variant "
        f"changes; and against `{CONTROL}+<variant>` where the study ran the control at the "
        "same settings (the same budget: what the ranking adds there). One seed; the rows were not chosen after seeing these numbers, but picking the "
        "best of them is a selection among as many settings as there are rows.",
        "",
        f"| row | Δ utility vs its loss's setting ↑ (95% CI) | win rate ↑ (95% Wilson) | "
        f"Δ gold ppl vs it | Δ utility vs `{CONTROL}` at the same variant ↑ (95% CI) |",
        "|---|---|---|---|---|",
    ]
    for r in swept:
        vs = r["vs_setting"]
        change = vs.get("gold_perplexity_change")
        win = vs["win_rate"]
        lines.append(
            f"| {r['name']} | {format_interval(vs['utility_difference'])} | "
            f"{format_number(win['rate'], 3)} [{format_number(win['low'], 3)}, "
            f"{format_number(win['high'], 3)}] | "
            f"{f'{change:+.1%}' if change is not None and is_finite(change) else '-'} | "
            f"{format_interval(matched) if (matched := _matched_control(r)) else '-'} |"
        )
    return [*lines, ""]


def _matched_control(row: dict) -> dict | None:
    """A PM-ranked sweep row against the control run at the same variant (``mle-only+epochs3``
    for ``soft+epochs3``): the budget-matched comparison, when the study has that row."""
    matched = matched_control_name(CONTROL, row["name"]) if row["kind"] == "sweep" else None
    return row["vs_controls"].get(matched) if matched else None


def _ranking_verdict(verdict: dict, rows: list[dict], max_rise: float) -> str:
    """Issue 13's target, said from the verdict and the table's measurements."""
    target = (
        f"a PM-ranked calibration beats `{CONTROL}` beyond its 95% interval with gold "
        f"perplexity up by at most {max_rise:.0%}"
    )
    if verdict.get("accepted") is None:
        return f"**Target** ({target}): not judged, no `{CONTROL}` control or PM-ranked row."
    best, d = verdict["best"], verdict["best_vs_control"]
    change = verdict["best_perplexity_change"]
    text = f"**Target** ({target}): **{'met' if verdict['accepted'] else 'not met'}**. "
    text += (
        f"Closest: `{best}`, {format_interval(d)} against `{CONTROL}`"
        + (f", gold perplexity {change:+.1%}" if is_finite(change) else "")
        + "."
    )
    matched = verdict.get("best_vs_matched_control")
    if matched:
        text += (
            f" Against `{matched_control_name(CONTROL, best)}`, the control at the same settings (the same "
            f"budget): {format_interval(matched)}"
            + (
                " (the ranking adds utility there too)."
                if matched["low"] > 0
                else " (at that budget the ranking adds nothing measurable)."
            )
        )
    if verdict["passing"]:
        text += f" Rows that pass: {', '.join(verdict['passing'])}."
    if verdict["peers_beating_control"]:
        text += (
            f" Peers beyond `{CONTROL}`'s interval: {', '.join(verdict['peers_beating_control'])}."
        )
    for name, interval in verdict["ceiling_vs_control"].items():
        text += f" Ceiling `{name}` against `{CONTROL}`: {format_interval(interval)}."
    reached = [
        (r["eval_ranking"]["judge"][1], r["eval_ranking"]["judge"][0], r["name"])
        for r in rows
        if "judge" in r["eval_ranking"] and is_finite(r["eval_ranking"]["judge"][1])
    ]
    if reached:
        after, before, name = max(reached, key=lambda r: r[0])
        text += (
            f" Highest own ranking accuracy against the judge on the evaluation candidates: "
            f"{format_number(after, 3)} (`{name}`; the base {format_number(before, 3)})."
        )
    return text
