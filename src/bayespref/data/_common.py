"""Plumbing shared by the loaders: strict UTF-8 reading, JSON with line numbers, skip/keep
bookkeeping, duplicate-id checks, and the closing log line.

Every loader follows the same contract (see :mod:`bayespref.data`):

- structurally broken input (bad JSON, wrong types, missing required fields, truncated CSV
  rows, non-UTF-8 bytes, unknown labels) raises :class:`DataError` with file and line, whatever
  ``strict`` is;
- an item with no usable label is skipped and counted in the :class:`LoadReport`, or raises
  :class:`DataError` when ``strict=True``;
- a duplicate item id raises :class:`DataError` naming both lines;
- the report is logged at INFO when the load ends.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .schema import AnnotatedDataset, AnnotatedExample, DataError, LabelSpace, LoadReport

NO_USABLE_LABEL = "no usable label"
EMPTY_RESPONSE = (
    "the response is empty (or whitespace only): there is nothing for a preference model to "
    "judge, and every such item would get the same prediction; fill it in or remove the item"
)

# The longest CSV field read. csv's default (131072 characters) refuses a long document in one
# cell with "field larger than field limit"; the whole file is in memory already, so a larger
# limit costs nothing.
CSV_FIELD_LIMIT = min(sys.maxsize, 2**31 - 1)  # a C long on every platform

_JSON_WS = re.compile(r"[ \t\n\r]*")

# What ``json`` raises on bad input: JSONDecodeError (a ValueError), a plain ValueError for an
# integer of more than 4300 digits or a repeated key (:func:`unique_keys`), RecursionError for
# nesting too deep.
JSON_ERRORS = (ValueError, RecursionError)


def json_problem(err: Exception) -> str:
    """What went wrong, for one of :data:`JSON_ERRORS` raised by ``json``."""
    if isinstance(err, json.JSONDecodeError):
        # some messages end in "at" ("Unterminated string starting at"): the column completes them
        return f"{err.msg.removesuffix(' at')} at column {err.colno}"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err).split(";")[0]


def unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``object_pairs_hook`` for ``json``: the object, or ``ValueError`` when a key repeats
    (plain ``json`` keeps the last value and drops the others silently)."""
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"key {key!r} appears twice in one object")
        obj[key] = value
    return obj


def read_text(path: str | os.PathLike[str]) -> str:
    """The whole file as text, decoded as strict UTF-8 (a leading BOM is dropped).

    Raises :class:`DataError` naming the line and byte offset of the first undecodable byte,
    or the file when it cannot be opened.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", str(path)) from None
    except IsADirectoryError:
        raise DataError("expected a file, got a directory", str(path)) from None
    except OSError as err:
        raise DataError(f"cannot read file: {err.strerror or err}", str(path)) from None
    try:
        # not "utf-8-sig": with a BOM its error offsets would count from after the BOM
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        bad = raw[err.start : err.end]
        raise DataError(
            f"not valid UTF-8: byte {bad[:4]!r} at byte offset {err.start} ({err.reason}); "
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)",
            str(path),
            line,
        ) from None
    return text.removeprefix("\ufeff")


def line_at(text: str, pos: int) -> int:
    """1-based line number of character offset ``pos`` in ``text``."""
    return text.count("\n", 0, pos) + 1


def iter_json_object(text: str, path: str) -> Iterator[tuple[str, Any, int]]:
    """Yield ``(key, value, line)`` for each member of a top-level JSON object, in file order.

    ``line`` is where the key starts, so errors about an item can point at it. A repeated key
    raises :class:`DataError` naming both lines (``json.load`` would keep the last silently).
    """
    decoder = json.JSONDecoder(object_pairs_hook=unique_keys)
    end = len(text)
    counted_to, line = 0, 1

    def line_of(pos: int) -> int:
        nonlocal counted_to, line
        line += text.count("\n", counted_to, pos)
        counted_to = pos
        return line

    def fail(problem: str, pos: int) -> DataError:
        # at the end of a truncated file, point at its last line with content, not past it
        return DataError(problem, path, line_at(text, min(pos, len(text.rstrip(" \t\n\r")))))

    def skip_whitespace(pos: int) -> int:
        match = _JSON_WS.match(text, pos)
        assert match is not None  # the pattern also matches the empty string
        return match.end()

    def decode(pos: int) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            raise fail(f"bad JSON: {json_problem(err)}", err.pos) from None
        except JSON_ERRORS as err:
            raise fail(f"bad JSON: {json_problem(err)}", pos) from None

    pos = skip_whitespace(0)
    if pos >= end or text[pos] != "{":
        raise fail("expected a JSON object ({...}) at the top level", pos)
    pos = skip_whitespace(pos + 1)
    seen: dict[str, int] = {}
    if pos < end and text[pos] == "}":
        pos += 1
    else:
        while True:
            if pos >= end or text[pos] != '"':
                raise fail("bad JSON: expected a string key", pos)
            key_line = line_of(pos)
            key, pos = decode(pos)
            pos = skip_whitespace(pos)
            if pos >= end or text[pos] != ":":
                raise fail("bad JSON: expected ':' after the key", pos)
            pos = skip_whitespace(pos + 1)
            value, pos = decode(pos)
            if key in seen:
                raise DataError(f"duplicate id {key!r} (also on line {seen[key]})", path, key_line)
            seen[key] = key_line
            yield key, value, key_line
            pos = skip_whitespace(pos)
            if pos < end and text[pos] == ",":
                pos = skip_whitespace(pos + 1)
                continue
            if pos < end and text[pos] == "}":
                pos += 1
                break
            raise fail("bad JSON: expected ',' or '}' (truncated file?)", pos)
    pos = skip_whitespace(pos)
    if pos < end:
        raise fail("bad JSON: extra data after the top-level object", pos)


def csv_rows(text: str, path: str) -> Iterator[tuple[list[str], int]]:
    """Yield ``(row, physical line where the row starts)`` of CSV ``text``; blank lines are
    passed over. Quoted fields may span lines; a broken quote raises :class:`DataError` at the
    line where its row starts. Lines are counted at ``\n`` as everywhere else (``csv`` itself
    also counts a lone ``\r``, e.g. one inside a quoted field). A field may be as long as
    :data:`CSV_FIELD_LIMIT` (``csv``'s own limit is set for each row read, then restored)."""
    lines = io.StringIO(text, newline="").readlines()
    line_of = list(itertools.accumulate((s.count("\n") for s in lines), initial=1))
    reader = csv.reader(lines, strict=True)
    last = 0
    while True:
        limit = csv.field_size_limit(CSV_FIELD_LIMIT)
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DataError(f"bad CSV: {err}", path, line_of[last]) from None
        finally:
            csv.field_size_limit(limit)
        start, last = line_of[last], reader.line_num
        if row:
            yield row, start


def split_labels(value: Any) -> list[str]:
    """``"0,1, 1"`` -> ``["0", "1", "1"]``; an empty string gives ``[]``."""
    text = str(value).strip()
    return [part.strip() for part in text.split(",")] if text else []


def is_blank(text: str) -> bool:
    """True for an empty or whitespace-only text (a response nobody can judge)."""
    return not text.strip()


def label_index(label_space: LabelSpace, label: Any, path: str, line: int | None) -> int:
    """``label_space.index(label)`` with the allowed labels and the location in the error."""
    try:
        return label_space.index(label)
    except KeyError as err:
        raise DataError(err.args[0], path, line) from None


def counts_of(indices: Sequence[int], num_classes: int) -> np.ndarray:
    """Per-class counts (C,) int64 of a list of class indices."""
    return np.bincount(np.asarray(indices, dtype=np.int64), minlength=num_classes).astype(np.int64)


class Collector:
    """Accumulates examples for one load and keeps its :class:`LoadReport` honest.

    Call :meth:`read` once per item seen, then either :meth:`keep` or :meth:`skip` for it;
    :meth:`finish` builds the dataset and logs the summary.
    """

    def __init__(
        self,
        source: str,
        label_space: LabelSpace,
        *,
        strict: bool,
        name: str,
        logger: logging.Logger,
        unit: str = "line",
    ):
        self.source = source
        self.label_space = label_space
        self.strict = strict
        self.name = name
        self.logger = logger
        self.unit = unit  # "line" (file:line) or e.g. "row" for sources without lines
        self.report = LoadReport(source=source)
        self.examples: list[AnnotatedExample] = []
        self._id_places: dict[str, int | None] = {}

    def error(self, problem: str, place: int | None) -> DataError:
        if self.unit == "line" or place is None:
            return DataError(problem, self.source, place)
        return DataError(f"{self.unit} {place}: {problem}", self.source)

    def read(self) -> None:
        self.report.read += 1

    def _claim(self, item_id: str, place: int | None) -> None:
        if item_id in self._id_places:
            first = self._id_places[item_id]
            where = f"{self.unit} {first}" if first is not None else "an earlier item"
            raise self.error(
                f"duplicate id {item_id!r} (first seen on {where}); ids must be unique", place
            )
        self._id_places[item_id] = place

    def keep(self, example: AnnotatedExample, place: int | None) -> None:
        """Add ``example`` found at ``place`` (a line, or a ``unit`` number)."""
        self._claim(example.id, place)
        self.examples.append(example)
        self.report.kept += 1

    def skip(
        self, reason: str, place: int | None, detail: str = "", item_id: str | None = None
    ) -> None:
        """Count a skipped item, or raise :class:`DataError` when ``strict``.

        ``item_id``, when the item has one, still takes part in the duplicate-id check (a
        skipped item and a kept one must not share an id)."""
        if item_id is not None:
            self._claim(item_id, place)
        if self.strict:
            text = f"{reason}: {detail}" if detail else reason
            raise self.error(f"{text} (strict=True: no item is skipped)", place)
        if place is None:
            where = self.source
        elif self.unit == "line":
            where = f"{self.source}:{place}"
        else:
            where = f"{self.source} {self.unit} {place}"
        self.report.skip(reason, where)

    def finish(self) -> AnnotatedDataset:
        assert self.report.kept + self.report.skipped == self.report.read, self.report
        self.logger.info("%s", self.report.summary())
        return AnnotatedDataset(
            examples=self.examples,
            label_space=self.label_space,
            name=self.name,
            report=self.report,
        )
