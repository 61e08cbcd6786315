"""The candidate file: one JSON line per training context, its settings in a sidecar.

::

    {"id", "context", "gold", "candidates": [{"text", "score", "count"}, ...],
     "num_generated", "num_unique"}

Candidates are ranked best first (:func:`dedupe_and_rank`: identical texts kept once with a
``count``). The settings the file was made with sit in ``<stem>.meta.json``
(:func:`candidates_meta_path`) as ``{"settings", "complete", "num_contexts", ...}``;
:func:`read_candidates` reads both. The held-out contexts' candidates, in the same format,
sit beside the file (:func:`held_out_candidates_path`). Written by
:mod:`bayespref.calibration.search`, read by the recipe and by ``export-pairs``: this module is
the format and nothing else.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..data.schema import DataError

logger = logging.getLogger(__name__)

CANDIDATES_FORMAT = "bayespref-candidates/1"


class CandidateCacheError(ConfigError):
    """A candidate file that does not belong to these settings, or is not in order."""


def merge_duplicates(texts: Sequence[str], scores: Iterable[float]) -> list[dict]:
    """``[{"text", "score", "count"}]`` in the order first seen, identical texts kept once
    with their first score and counted (a sampled list stays in the order drawn)."""
    merged: dict[str, dict] = {}
    for text, score in zip(texts, scores, strict=True):
        if text in merged:
            merged[text]["count"] += 1
        else:
            merged[text] = {"text": text, "score": float(score), "count": 1}
    return list(merged.values())


def dedupe_and_rank(texts: Sequence[str], scores: Iterable[float]) -> list[dict]:
    """``[{"text", "score", "count"}]`` best first; identical texts kept once and counted
    (METHOD section 5 step 2). Equal scores keep the search's order (stable sort)."""
    return sorted(merge_duplicates(texts, scores), key=lambda c: -c["score"])


def candidates_meta_path(path: str | os.PathLike) -> Path:
    """The settings sidecar of a candidate file: ``<stem>.meta.json`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def held_out_candidates_path(path: str | os.PathLike) -> Path:
    """The held-out contexts' candidate file beside a training one: ``<stem>.eval.jsonl``
    (its settings in ``<stem>.eval.meta.json``), searched only to measure the generator's
    ranking accuracy (:mod:`bayespref.calibration.ranking`), never trained on."""
    path = Path(path)
    return path.with_name(path.stem + ".eval" + path.suffix)


def read_candidates(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(meta, rows) of a candidate file: the settings in ``<stem>.meta.json`` and one row per
    context, ``{"id", "context", "gold", "candidates": [{"text", "score", "count"}, ...],
    "num_generated", "num_unique"}``, candidates best first as written.

    Raises :class:`DataError` with the file (and line) when the settings file is missing, a
    line is cut short, or a line is not a valid candidate row (see
    :func:`candidate_row_problem`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", str(path))
    meta_path = candidates_meta_path(path)
    if not meta_path.is_file():
        raise DataError(f"no settings file {meta_path.name} beside the candidates", str(path))
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"not valid JSON: {err}", str(meta_path)) from None
    if not meta.get("complete", True):
        logger.warning("%s: the candidate file is incomplete (an interrupted run)", path)
    rows, _ = read_candidate_rows(path, tolerate_partial_last=False)
    return meta, rows


def candidate_row_problem(row: Any) -> str | None:
    """What is wrong with one parsed candidate row, or None when it is valid."""
    if not isinstance(row, dict):
        return "each line must be a JSON object"
    if not isinstance(row.get("id"), str):
        return "'id' must be a string"
    context = row.get("context")
    if not (
        isinstance(context, str)
        or (isinstance(context, list) and all(isinstance(t, str) for t in context))
    ):
        return "'context' must be a string or a list of strings"
    if row.get("gold") is not None and not isinstance(row["gold"], str):
        return "'gold' must be a string or null"
    candidates = row.get("candidates")
    if not isinstance(candidates, list):
        return "missing or non-list 'candidates'"
    for k, c in enumerate(candidates):
        if not isinstance(c, dict) or not isinstance(c.get("text"), str):
            return f"candidates[{k}]: missing or non-string 'text'"
        score = c.get("score")
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            return f"candidates[{k}]: 'score' must be a finite number, got {score!r}"
        count = c.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            return f"candidates[{k}]: 'count' must be a positive integer, got {count!r}"
    for key in ("num_generated", "num_unique"):
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"'{key}' must be an integer"
    return None


def read_candidate_rows(path: Path, tolerate_partial_last: bool) -> tuple[list[dict], int]:
    """The valid rows of a candidate file and the byte length of its complete lines.

    A crash can cut the last line: with ``tolerate_partial_last`` it is left out (the caller
    truncates it away to resume), else it is a :class:`DataError`.
    """
    raw = path.read_bytes()
    complete = raw.rfind(b"\n") + 1
    if complete < len(raw) and not tolerate_partial_last:
        raise DataError("the last line is incomplete (an interrupted run?)", str(path))
    rows = []
    for line_no, line in enumerate(raw[:complete].split(b"\n")[:-1], start=1):
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise DataError(f"not UTF-8 ({err.reason})", str(path), line_no) from None
        except ValueError as err:
            raise DataError(f"not valid JSON: {err}", str(path), line_no) from None
        problem = candidate_row_problem(row)
        if problem is not None:
            raise DataError(f"not a candidate row: {problem}", str(path), line_no)
        rows.append(row)
    return rows, complete


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON through a temporary file and a rename: a crash leaves the old
    file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(path)


def settings_diff(old: Any, new: Any, prefix: str = "") -> str:
    """The keys where two (nested) settings differ, as ``"a.b: old -> new; ..."``."""
    if isinstance(old, dict) and isinstance(new, dict):
        parts = [
            settings_diff(old.get(k), new.get(k), f"{prefix}{k}.")
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]
        return "; ".join(p for p in parts if p)
    return f"{prefix.rstrip('.')}: {old!r} -> {new!r}"
