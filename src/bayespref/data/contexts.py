"""Contexts for a generator: ``{"id", "context", "gold"}`` rows from a file, synthetic data or
ConvAbuse. One reader for calibration, generator evaluation and the calibration study.

A ``context`` is a string or a list of turns (strings, oldest first); ``gold`` is the reference
reply (a string, or ``None`` where a source has none). How a context becomes a prompt is
:func:`bayespref.lm.chat_messages`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._common import JSON_ERRORS, json_problem, read_text, unique_keys
from .convabuse import load_convabuse
from .schema import DataError
from .synthetic import make_synthetic_contexts

logger = logging.getLogger(__name__)

Context = str | Sequence[str]


def context_turns(context: Context) -> list[str]:
    """The non-blank turns of a context (a string is one turn)."""
    turns = [context] if isinstance(context, str) else list(context)
    return [t for t in turns if t.strip()]


def read_context_jsonl(path: str | os.PathLike, require_gold: bool = False) -> list[dict]:
    """``{"id"?, "context", "gold"?}`` objects, one per line (blank lines skipped).

    ``context`` is a non-empty string or a non-empty list of strings; ``gold`` a non-empty
    string, or null / absent unless ``require_gold`` (calibration needs one: it is the MLE
    target). A missing id becomes ``<file name>:<line>``; ids must be unique. Extra keys are
    ignored. Every problem raises :class:`DataError` with the file and line.
    """
    source = str(path)
    rows: list[dict] = []
    seen: dict[str, int] = {}  # item id -> line
    for line_no, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue

        def fail(problem: str, line_no: int = line_no) -> DataError:
            return DataError(problem, source, line_no)

        try:
            row = json.loads(line, object_pairs_hook=unique_keys)
        except JSON_ERRORS as err:
            raise fail(f"not valid JSON: {json_problem(err)}") from None
        if not isinstance(row, dict):
            raise fail("each line must be a JSON object")
        if "context" not in row:
            raise fail("missing key 'context'")
        context = row["context"]
        if isinstance(context, list):
            if not context or not all(isinstance(t, str) for t in context):
                raise fail("'context' must be a non-empty list of strings")
        elif not isinstance(context, str):
            raise fail("'context' must be a string or a list of strings")
        if not context_turns(context):
            raise fail("'context' is blank")
        gold = row.get("gold")
        if gold is None and require_gold:
            raise fail("missing key 'gold' (a reference reply is required here)")
        if gold is not None and (not isinstance(gold, str) or not gold.strip()):
            raise fail("'gold' must be a non-empty string or null")
        item_id = row.get("id", f"{Path(source).name}:{line_no}")
        if not isinstance(item_id, str | int) or isinstance(item_id, bool):
            raise fail(f"'id' must be a string or an integer, got {item_id!r}")
        item_id = str(item_id)
        if item_id in seen:
            raise fail(f"duplicate id {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = line_no
        rows.append({"id": item_id, "context": context, "gold": gold})
    if not rows:
        raise DataError("no contexts in the file", source)
    return rows


def synthetic_contexts(n: int, seed: int = 0) -> list[dict]:
    """``n`` synthetic emotional-support contexts with a gold reply
    (:func:`~bayespref.data.synthetic.make_synthetic_contexts`)."""
    return [
        {"id": r["id"], "context": r["context"], "gold": r["gold"]}
        for r in make_synthetic_contexts(n, seed=seed)
    ]


def convabuse_contexts(path: str | os.PathLike) -> list[dict]:
    """ConvAbuse conversations up to the agent's turn, the real user turn as gold.

    Only items whose annotators' majority found no abuse (severity 1 or 0 outnumbers
    -1/-2/-3; a tie counts as abuse) and that have a non-empty context and user turn.
    """
    dataset = load_convabuse(path, label_scheme="binary")
    rows = []
    for ex in dataset.examples:
        not_abusive, abusive = int(ex.counts[0]), int(ex.counts[1])
        if not_abusive > abusive and ex.context and ex.response.strip():
            rows.append({"id": ex.id, "context": list(ex.context), "gold": ex.response})
    logger.info("%s: %d of %d items kept (majority: no abuse)", path, len(rows), len(dataset))
    if not rows:
        raise DataError("no usable non-abusive items", str(path))
    return rows


def subsample(rows: list[dict], n: int | None, seed: int) -> list[dict]:
    """At most ``n`` rows, a seeded random subset kept in file order (None: all)."""
    if n is None or len(rows) <= n:
        return rows
    keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:n])
    return [rows[i] for i in keep]


def contexts_from_spec(spec: str) -> list[dict]:
    """``synthetic:N[:SEED]``, ``convabuse:PATH`` (a split CSV) or a context JSONL file."""
    if spec.startswith("synthetic:"):
        parts = spec.split(":")
        try:
            n, seed = int(parts[1]), int(parts[2]) if len(parts) > 2 else 0
        except (ValueError, IndexError):
            raise DataError(f"expected synthetic:N:SEED, got {spec!r}") from None
        if len(parts) > 3 or n < 1:
            raise DataError(f"expected synthetic:N:SEED with N >= 1, got {spec!r}")
        return synthetic_contexts(n, seed)
    if spec.startswith("convabuse:"):
        return convabuse_contexts(spec.split(":", 1)[1])
    return read_context_jsonl(spec)
