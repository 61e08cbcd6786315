"""The loss study's report: which row wins each metric and whether the gap beats the seed noise
(:func:`conclusion`), the plots (:func:`write_plots`) and ``report.md`` (:func:`write_report`).

Everything here reads what the study computed (the aggregated table, the cells' own
``metrics.jsonl``); nothing trains or evaluates.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import metrics as metrics_lib
from ..annotator_metrics import ANNOTATOR_METRICS
from ..ranking_metrics import BEST_OF_K
from .common import format_mean_half_width, git_commit, save_figure
from .loss_study_config import Cell, StudyConfig

PERSPECTIVIST_COLUMNS = (
    "annotator_error",
    "annotator_error_majority",
    "annotator_distance",
    "annotator_distance_majority",
    "wasserstein",
)
"""The per-annotator table's columns (:data:`bayespref.annotator_metrics.ANNOTATOR_METRICS`)."""

# ---------------------------------------------------------------------------------------------
# Conclusions


def conclusion(metric: str, rows: dict[str, tuple[float, float, int]]) -> str:
    """One plain sentence on which row wins ``metric``, by how much, and whether the gap
    exceeds the seed noise (the two 95% intervals do not overlap)."""
    spec = metrics_lib.METRICS[metric]
    valid = {r: v for r, v in rows.items() if not math.isnan(v[0])}
    if spec.higher_is_better is None or len(valid) < 2:
        return ""
    sign = 1 if spec.higher_is_better else -1
    order = sorted(valid, key=lambda r: -sign * valid[r][0])
    best, second = order[0], order[1]
    (m1, h1, _), (m2, h2, _) = valid[best], valid[second]
    gap = abs(m1 - m2)
    direction = "higher" if spec.higher_is_better else "lower"
    if math.isnan(h1) or math.isnan(h2):
        noise = "no interval with one seed, so the noise is unknown"
    elif (m1 - h1 > m2 + h2) if spec.higher_is_better else (m1 + h1 < m2 - h2):
        noise = "the intervals do not overlap: the gap exceeds the seed noise"
    else:
        noise = "the intervals overlap: within the seed noise"
    worst = order[-1]
    return (
        f"**{metric}** ({direction} is better): `{best}` is best ({m1:.4g}), ahead of "
        f"`{second}` by {gap:.3g} ({noise}); `{worst}` is last ({valid[worst][0]:.4g})."
    )


# ---------------------------------------------------------------------------------------------
# Plots


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _curve(cells: list[Cell], study: StudyConfig, split: str, key: str):
    """Mean over seeds of ``key`` per step for ``split`` records; (steps, values) arrays."""
    per_step: dict[int, list[float]] = {}
    for cell in cells:
        run_dir = study.study_dir / cell.dataset.name / cell.row / f"seed{cell.seed}"
        for record in _read_jsonl(run_dir / "metrics.jsonl"):
            value = record.get(key)
            if record.get("split") == split and isinstance(value, (int, float)):
                per_step.setdefault(int(record["step"]), []).append(float(value))
    steps = np.array(sorted(per_step))
    return steps, np.array([np.mean(per_step[s]) for s in steps])


def _smooth(values: np.ndarray, window: int = 10) -> np.ndarray:
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


_STYLES = ["-", "--", "-.", ":"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _label_validation_axes(axes, metrics: tuple[str, str], title: str) -> None:
    """Axis labels of a (soft CE, JSD) validation pair; ``{}`` in ``title`` takes the metric."""
    for ax, metric in zip(axes, metrics, strict=True):
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(f"validation {metric} (lower is better)")
        ax.set_title(title.replace("{}", metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)


def write_plots(study: StudyConfig, cells: list[Cell], table: dict) -> list[Path]:
    """Curves per data set, objectives per loss, the batch sweep, detached vs not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Path] = []
    plots = study.study_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    by_dataset: dict[str, dict[str, list[Cell]]] = {}
    for cell in cells:
        by_dataset.setdefault(cell.dataset.name, {}).setdefault(cell.row, []).append(cell)

    for dataset, rows in by_dataset.items():
        main = {r: c for r, c in rows.items() if c[0].group == "main"}
        if not main:
            continue
        # 1. validation soft CE and JSD to the annotators vs steps, one line per row
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for k, (row, row_cells) in enumerate(main.items()):
            for ax, metric in zip(axes, ("soft_ce", "jsd"), strict=True):
                steps, values = _curve(row_cells, study, "valid", metric)
                if len(steps):
                    ax.plot(steps, values, _STYLES[k % 4], marker=_MARKERS[k % 8], label=row)
        _label_validation_axes(
            axes, ("soft CE", "JSD to the annotators"), dataset + ": validation {}, mean over seeds"
        )
        out.append(save_figure(fig, plots / f"{dataset}-validation.png"))

        # 2. each loss's own objective vs steps (train smoothed, valid at the training batch size)
        ncols = min(5, len(main))  # a grid, not one long strip: readable on a screen
        nrows = math.ceil(len(main) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
        for ax in axes.flat[len(main) :]:
            ax.set_visible(False)
        for ax, (row, row_cells) in zip(axes.flat, main.items()):
            steps, values = _curve(row_cells, study, "train", "loss")
            if len(steps):
                smooth = _smooth(values)
                label = "train (10-step mean)" if len(smooth) < len(values) else "train"
                ax.plot(steps[len(steps) - len(smooth) :], smooth, label=label)
            steps, values = _curve(row_cells, study, "valid", "loss")
            if len(steps):
                ax.plot(steps, values, "o--", label="validation")
            ax.set_title(f"{dataset}: {row}", fontsize=9)
            ax.set_xlabel("optimiser step")
            ax.set_ylabel("own training objective")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        out.append(save_figure(fig, plots / f"{dataset}-objectives.png"))

        # 3. gradient through the target vs detached (each loss that has a +detached row)
        pairs = [(r[: -len("+detached")], r) for r in main if r.endswith("+detached")]
        pairs = [(a, b) for a, b in pairs if a in main]
        if pairs:
            fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
            for k, (through, detached) in enumerate(pairs):
                for row, style, what in ((through, "-", "through r"), (detached, "--", "detached")):
                    for ax, metric in zip(axes, ("soft_ce", "jsd"), strict=True):
                        steps, values = _curve(main[row], study, "valid", metric)
                        if len(steps):
                            label = f"{through}: gradient {what}"
                            ax.plot(steps, values, style, marker=_MARKERS[k % 8], label=label)
            _label_validation_axes(
                axes, ("soft CE", "JSD"), f"{dataset}: gradient through the target vs detached"
            )
            out.append(save_figure(fig, plots / f"{dataset}-detached.png"))

        # 4. batch-size sensitivity of the batch normaliser vs the EMA normaliser
        sweep = {r: c for r, c in rows.items() if c[0].group == "sweep"}
        if sweep and dataset in table:
            fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
            normalisers = sorted({c[0].normaliser for c in sweep.values() if c[0].normaliser})
            for k, normaliser in enumerate(normalisers):
                for ax, metric in zip(axes, ("soft_ce", "jsd"), strict=True):
                    points = sorted(
                        (c[0].batch_size, table[dataset][r]["raw"][metric])
                        for r, c in sweep.items()
                        if c[0].normaliser == normaliser and r in table[dataset]
                    )
                    if not points:
                        continue
                    sizes = [p[0] for p in points]
                    means = np.array([p[1][0] for p in points])
                    halves = np.nan_to_num(np.array([p[1][1] for p in points]))
                    ax.errorbar(
                        sizes,
                        means,
                        yerr=halves,
                        fmt=_STYLES[k % 4],
                        marker=_MARKERS[k % 8],
                        capsize=3,
                        label=f"{normaliser} normaliser",
                    )
            loss = next(iter(sweep.values()))[0].loss
            for ax, metric in zip(axes, ("soft CE", "JSD"), strict=True):
                ax.set_xscale("log", base=2)
                ax.set_xlabel("training batch size")
                ax.set_ylabel(f"test {metric} (lower is better), 95% CI")
                ax.set_title(f"{dataset}: {loss}, batch vs EMA normaliser")
                ax.grid(alpha=0.3)
            axes[0].legend(fontsize=8)
            out.append(save_figure(fig, plots / f"{dataset}-batch-sensitivity.png"))
    return out


# ---------------------------------------------------------------------------------------------
# report.md


def write_report(
    study: StudyConfig,
    cells: list[Cell],
    table: dict,
    plots: list[Path],
    command: str | None = None,
) -> Path:
    """``report.md``: tables (mean ± 95% half-width over seeds), raw and temperature-scaled,
    the exact command and commit, and a conclusion per metric computed from the numbers."""
    lines = [f"# Loss study: {study.name}", ""]
    lines += [f"- command: `{command or '(python API)'}`", f"- git commit: `{git_commit()}`"]
    expected: dict[str, dict[str, int]] = {}  # cells per (data set, row)
    for cell in cells:
        expected.setdefault(cell.dataset.name, {}).setdefault(cell.row, 0)
        expected[cell.dataset.name][cell.row] += 1
    lines += [
        f"- seeds: {list(study.seeds)}; cells: {len(cells)}",
        "- every number: mean over seeds ± the half-width of the 95% t-interval "
        "(t_{0.975, n-1} s / sqrt(n)); metrics on each data set's test split, model = the best "
        "checkpoint by the run's select_metric on the held-out split",
        "- *temperature-scaled*: logits divided by one scalar T per run, fitted to minimise the "
        "soft CE on the held-out part of train (the run's validation split)",
        "",
    ]
    metric_names = [m for m, s in metrics_lib.METRICS.items() if s.higher_is_better is not None]
    sweep_rows = {c.row for c in cells if c.group == "sweep"}
    for dataset, rows in expected.items():
        lines += [f"## {dataset}", ""]
        results = table.get(dataset, {})
        missing = [r for r in rows if r not in results]
        if missing:
            lines += [f"Not finished (no results yet): {', '.join(missing)}", ""]
        if not results:
            continue
        present = [m for m in metric_names if any(m in v["raw"] for v in results.values())]
        arrows = {m: "↑" if metrics_lib.METRICS[m].higher_is_better else "↓" for m in present}
        for kind, title in (("raw", "raw"), ("scaled", "temperature-scaled")):
            lines += [f"### {title}", ""]
            header = ["row", "seeds"] + [f"{m} {arrows[m]}" for m in present]
            if kind == "scaled":
                header.append("T")
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            for row, entry in results.items():
                n = next(iter(entry[kind].values()))[2] if entry[kind] else 0
                cells_ = [f"`{row}`", str(n)]
                cells_ += [
                    format_mean_half_width(*entry[kind][m][:2]) if m in entry[kind] else "–"
                    for m in present
                ]
                if kind == "scaled":
                    cells_.append(format_mean_half_width(*entry["temperature"][:2]))
                lines.append("| " + " | ".join(cells_) + " |")
            floor = [e[kind].get("entropy_floor") for e in results.values()]
            if floor and floor[0] is not None:
                lines += ["", f"Annotator entropy H(t) (soft CE floor): {floor[0][0]:.4f}"]
            lines.append("")
        main_rows = {r: e for r, e in results.items() if r not in sweep_rows}  # sweep: no contest
        lines += annotator_table(main_rows)
        lines += ranking_table(main_rows)
        lines += _temperature_summary(main_rows)
        for kind, title in (("raw", "raw"), ("scaled", "temperature-scaled")):
            lines += [f"### Conclusions ({title})", ""]
            for m in present:
                text = conclusion(m, {r: e[kind][m] for r, e in main_rows.items() if m in e[kind]})
                if text:
                    lines.append(f"- {text}")
            lines.append("")
    lines += ["## Which row wins where", ""]
    lines += _winners(table, metric_names, sweep_rows)
    if plots:
        lines += ["", "## Plots", ""]
        for p in plots:
            lines.append(f"![{p.stem}](plots/{p.name})")
    path = study.study_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def annotator_table(rows: dict) -> list[str]:
    """Per-annotator predictions against each annotator's label (LeWiDi 2025's perspectivist
    task), raw, beside the baseline that gives every annotator the item's majority label;
    nothing for a data set without annotator ids. A row of one distribution predicts the same
    class for every annotator of an item (its crowd argmax)."""
    shown = [m for m in PERSPECTIVIST_COLUMNS if any(m in e["raw"] for e in rows.values())]
    if "annotator_error" not in shown:
        return []
    lines = [
        "### Per annotator (raw)",
        "",
        "The `_majority` columns give every annotator the item's majority label, read from the "
        "test item's own labels: a reference that knows the answers on the items where the "
        "annotators agree, which a model that reads only the text does not.",
        "",
    ]
    header = ["row"] + [
        f"{m} {'↑' if ANNOTATOR_METRICS[m].higher_is_better else '↓'}" for m in shown
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row, entry in rows.items():
        values = [
            format_mean_half_width(*entry["raw"][m][:2]) if m in entry["raw"] else "–"
            for m in shown
        ]
        lines.append("| " + " | ".join([f"`{row}`", *values]) + " |")
    errors = {
        r: e["raw"]["annotator_error"] for r, e in rows.items() if "annotator_error" in e["raw"]
    }
    best = min(errors, key=lambda r: errors[r][0])
    baseline = rows[best]["raw"].get("annotator_error_majority")
    lines.append("")
    if baseline is not None:
        lines.append(
            f"Lowest per-annotator error rate: `{best}` {format_mean_half_width(*errors[best][:2])}"
            f" against {baseline[0]:.4f} for the majority label given to every annotator ("
            f"{versus_baseline(errors[best], baseline[0])})."
        )
        lines.append("")
    return lines


def ranking_table(rows: dict) -> list[str]:
    """How each row ranks every context's candidates against the oracle (raw; the test split
    holds candidate sets: :func:`bayespref.studies.loss_study.candidate_ranking`), then the
    best-of-K utility of its pick beside the reference picks, which no row changes."""
    prefix = "ranking_"
    if not any(prefix + "pairwise_accuracy" in e["raw"] for e in rows.values()):
        return []
    ranked = ["pairwise_accuracy", "spearman", "top1"]
    picks = [f"best_of_{k}" for k in BEST_OF_K]
    lines = ["### Ranking each context's candidates (raw)", ""]
    header = ["row"] + [f"{m} ↑" for m in ranked + picks]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row, entry in rows.items():
        values = [
            format_mean_half_width(*entry["raw"][prefix + m][:2])
            if prefix + m in entry["raw"]
            else "–"
            for m in ranked + picks
        ]
        lines.append("| " + " | ".join([f"`{row}`", *values]) + " |")
    reference = next(e["raw"] for e in rows.values() if prefix + "pairwise_accuracy" in e["raw"])
    notes = [f"random top1 {reference[prefix + 'top1_random'][0]:.4f}"]
    for k in BEST_OF_K:
        oracle, random_, first = (
            reference[f"{prefix}best_of_{k}_{pick}"][0] for pick in ("oracle", "random", "first")
        )
        notes.append(
            f"best-of-{k}: the oracle's pick {oracle:.4f}, a random pick {random_:.4f}, the first "
            f"candidate {first:.4f}"
        )
    lines += ["", "Reference picks (the same for every row): " + "; ".join(notes) + ".", ""]
    return lines


def versus_baseline(interval: tuple, baseline: float) -> str:
    """Whether a (mean, half-width, n) error rate is below a fixed baseline beyond the noise."""
    mean, half_width = interval[0], interval[1]
    if mean + half_width < baseline:
        return "lower, beyond the seed noise"
    if mean < baseline:
        return "lower, within the seed noise"
    return "not lower"


def _temperature_summary(rows: dict) -> list[str]:
    """One sentence on what temperature scaling did to the test soft CE, per row."""
    changes = {
        r: (e["temperature"][0], e["scaled"]["soft_ce"][0] - e["raw"]["soft_ce"][0])
        for r, e in rows.items()
        if "soft_ce" in e["raw"] and not math.isnan(e["raw"]["soft_ce"][0])
    }
    if not changes:
        return []
    most = min(changes, key=lambda r: changes[r][1])
    overconfident = sorted(r for r, (t, _) in changes.items() if t > 1)
    text = (
        f"Temperature scaling changes the test soft CE by {changes[most][1]:+.4g} for `{most}` "
        f"(T = {changes[most][0]:.3g}, the largest gain); "
    )
    if overconfident:
        text += f"rows fitted with T > 1 (over-confident): {', '.join(f'`{r}`' for r in overconfident)}."
    else:
        text += "no row was over-confident on average (every mean T <= 1)."
    return [text, ""]


def _winners(table: dict, metric_names: list[str], sweep_rows: set[str]) -> list[str]:
    out = []
    for kind in ("raw", "scaled"):
        header = ["metric"] + [f"{d} ({kind})" for d in table]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for m in metric_names:
            spec = metrics_lib.METRICS[m]
            row = [m]
            for dataset in table:
                vals = {
                    r: e[kind][m][0]
                    for r, e in table[dataset].items()
                    if r not in sweep_rows and m in e[kind] and not math.isnan(e[kind][m][0])
                }
                if not vals:
                    row.append("–")
                    continue
                pick = max if spec.higher_is_better else min
                best = pick(vals, key=vals.__getitem__)
                row.append(f"`{best}`")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return out
