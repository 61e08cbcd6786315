"""Metric tables for the terminal: each metric name carries its direction."""

from __future__ import annotations

from collections.abc import Mapping

from ..metrics import METRICS, is_better


def metric_label(name: str) -> str:
    metric = METRICS.get(name)
    if metric is None:
        return name
    if metric.higher_is_better is None:
        return f"{name} (ref)"
    return f"{name} {'↑' if metric.higher_is_better else '↓'}"


def format_value(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    return f"{float(value):.{digits}f}"


def format_table(
    results: Mapping[str, float] | Mapping[str, Mapping[str, float]], digits: int = 4
) -> str:
    """Fixed-width text table of metric values, one row per metric.

    Each metric name carries its direction: ``↓`` lower is better, ``↑`` higher is better,
    ``(ref)`` a reference quantity. ``results`` is either ``{metric: value}`` (one column)
    or ``{run: {metric: value}}`` (one column per run, in the given order); in the latter
    form the best value of each selectable row is marked with ``*`` when there are several
    runs. Rows follow :data:`METRICS` order, then any unknown names; missing values show as
    ``-``.
    """
    if not results:
        return ""
    nested = {run: values for run, values in results.items() if isinstance(values, Mapping)}
    columns: dict[str, dict[str, float]]
    if len(nested) == len(results):
        columns = {str(run): dict(values) for run, values in nested.items()}
    elif nested:
        raise ValueError("results must be {metric: value} or {run: {metric: value}}, not a mix")
    else:
        columns = {"value": {name: v for name, v in results.items() if not isinstance(v, Mapping)}}

    seen = [name for values in columns.values() for name in values]
    names = [n for n in METRICS if n in seen] + list(
        dict.fromkeys(n for n in seen if n not in METRICS)
    )

    rows = []
    for name in names:
        values = [columns[run].get(name) for run in columns]
        cells = [format_value(v, digits) for v in values]
        if len(columns) > 1:
            # Every cell gets a one-character suffix ("*" marks the best) so numbers align.
            best = None
            metric = METRICS.get(name)
            if metric is not None and metric.selectable:
                for v in values:
                    if is_better(name, v, best):
                        best = v
            cells = [
                c + ("*" if best is not None and v == best else " ")
                for c, v in zip(cells, values, strict=True)
            ]
        rows.append([metric_label(name), *cells])

    header = ["metric", *columns]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(row) for row in rows)])
