"""The native format: JSON Lines or CSV files of responses, their contexts and their annotations.

JSON Lines (``.jsonl``, ``.ndjson``, or ``.json`` holding one object per line)
-------------------------------------------------------------------------------
One JSON object per line, UTF-8. Blank lines are ignored. Fields:

``id`` (optional, string or integer)
    Unique within the file. Defaults to ``<file name>:<line>``, e.g. ``train.jsonl:12``.
``context`` (optional)
    A string (one turn) or a list of strings (turns, oldest first). Missing, ``null`` or
    ``""`` mean no context; anything else (a number, ``false``, an object) is an error.
``response`` (required, string)
    The text being judged; empty or whitespace-only is an error.
``labels`` (list) **or** ``counts`` (list or object) -- exactly one of them
    ``labels`` holds one label per annotator: a class name, an alias, or a class index (the
    integer ``2`` or the string ``"2"``). ``null`` or ``""`` marks an annotator who gave no
    label. ``counts`` holds how many annotators chose each class, either as a list of ``C``
    non-negative integers in class order or as an object ``{"class name or alias": count}``
    (classes not named count 0).
``annotators`` (optional, list of strings/integers, only with ``labels``)
    Annotator ids, parallel to ``labels``. With them, each example keeps who said what
    (``AnnotatedExample.annotations``), which annotator models such as Dawid-Skene need.
``true_distribution`` (optional, ``C`` probabilities in class order, summing to 1)
    The generating distribution ``p*`` where it is known (synthetic data).
``group`` (optional, string or integer)
    The context the item answers, shared by e.g. one context's candidates (``meta["group"]``).

Any other field is kept in ``AnnotatedExample.meta``. Example::

    {"id": "a1", "context": ["I failed my exam."], "response": "That sounds hard.", "labels": ["good", "good", "bad", null], "annotators": ["w1", "w2", "w3", "w4"]}
    {"context": "", "response": "Whatever.", "counts": {"bad": 3, "good": 1}}

CSV (``.csv``)
--------------
A header row, then one row per item, UTF-8, comma-separated, RFC 4180 quoting (fields may
span lines inside quotes). Columns:

``id`` (optional)
    As above; an empty cell means ``<file name>:<line>``.
``context`` (optional)
    Turns separated by ``" ||| "`` (space, three bars, space), or a JSON list of strings
    (``["hi", "how are you?"]``). An empty cell means no context.
``response`` (required)
``labels``
    A JSON list (``["good", null, 1]``) or labels separated by ``|`` (``good|bad|good``;
    an empty entry, as in ``good||bad``, is a missing annotator).
``annotators`` (optional, with ``labels``)
    Same two spellings as ``labels``, parallel to it.
``count_<class>`` columns (instead of ``labels``)
    One column per class, e.g. ``count_good,count_bad``; ``<class>`` is a class name or alias.
    Classes without a column count 0; an empty cell counts 0.

Other columns are kept in ``meta``. "Line" in messages is the physical line where the row
starts.

Classes and utilities
---------------------
The class names and their utilities (higher = more preferred) come, in this order, from

1. the config key ``data.label_space`` (the ``label_space`` argument in Python: a
   :class:`LabelSpace` or a mapping
   ``{"names": [...], "utilities": [...], "tie_break": ..., "aliases": {...}}``);
2. a sidecar ``<file stem>.meta.json`` beside the file (``train.meta.json`` for
   ``train.jsonl``), then ``meta.json`` in the same directory, holding that same mapping, e.g.
   ``{"names": ["bad", "ok", "good"], "utilities": [-1, 0, 1], "tie_break": "less-preferred"}``.

The keys are those :meth:`LabelSpace.to_dict` writes (a run's ``data_stats.json`` holds its
label space in this form): ``names`` (the classes, in order), ``utilities`` (one number per
class, higher = more preferred), optionally ``tie_break`` and ``aliases`` (alias -> class
name). Any other key, ``classes`` among them, is an error naming the right ones.

Errors and skips
----------------
Bad JSON, a non-object line, a field of the wrong type, a missing or empty ``response``, both or
neither of ``labels``/``counts``, negative or fractional counts, a CSV row with the wrong
number of fields, undecodable bytes, an unknown label (the message lists the allowed ones) and a
repeated ``id`` (the message names both lines) raise :class:`DataError` (``path:line:
problem``) whether or not ``strict`` is set. An item whose labels are all missing, or whose
counts are all zero, has no usable label: it is skipped and counted in ``dataset.report``, or
raises :class:`DataError` with ``strict=True``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._common import (
    EMPTY_RESPONSE,
    JSON_ERRORS,
    NO_USABLE_LABEL,
    Collector,
    counts_of,
    csv_rows,
    is_blank,
    json_problem,
    read_text,
    unique_keys,
)
from .record_fields import parse_group, parse_true_distribution
from .schema import (
    LABEL_SPACE_EXAMPLE,
    AnnotatedDataset,
    AnnotatedExample,
    DataError,
    LabelSpace,
    as_label_space,
)

logger = logging.getLogger(__name__)

CONTEXT_SEPARATOR = " ||| "
LABEL_SEPARATOR = "|"
COUNT_PREFIX = "count_"
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
KNOWN_FIELDS = (
    *("id", "context", "response", "labels", "counts", "annotators"),
    *("true_distribution", "group"),  # read by record_fields
)
MAX_COUNT = 2**31 - 1  # per class and item; keeps sums of counts far from int64 overflow


def load_native(
    path: str | Path,
    *,
    label_space: LabelSpace | dict | None = None,
    file_format: str | None = None,
    strict: bool = False,
    name: str | None = None,
) -> AnnotatedDataset:
    """Load a native JSON Lines or CSV file (format in this module's docstring).

    ``file_format`` is ``"jsonl"`` or ``"csv"``; by default it follows the file suffix.
    """
    path = Path(path)
    if file_format is None:
        suffix = path.suffix.lower()
        if suffix in JSONL_SUFFIXES:
            file_format = "jsonl"
        elif suffix == ".csv":
            file_format = "csv"
        else:
            raise DataError(
                f"cannot tell the format from the suffix {suffix!r}: use .jsonl or .csv, "
                "or pass file_format='jsonl' or 'csv'",
                str(path),
            )
    if file_format not in ("jsonl", "csv"):
        raise ValueError(f"file_format must be 'jsonl' or 'csv', got {file_format!r}")
    text = read_text(path)
    space = resolve_label_space(label_space, path)
    collector = Collector(str(path), space, strict=strict, name=name or path.stem, logger=logger)
    rows = (
        _jsonl_records(text, str(path))
        if file_format == "jsonl"
        else _csv_records(text, str(path), space)
    )
    for record, line in rows:
        collector.read()
        example, problem = parse_record(
            record, space, default_id=f"{path.name}:{line}", path=str(path), line=line
        )
        if example is None:
            item_id = record_id(record, f"{path.name}:{line}", None)
            collector.skip(NO_USABLE_LABEL, line, problem, item_id=item_id)
        else:
            collector.keep(example, line)
    return collector.finish()


def resolve_label_space(label_space: LabelSpace | dict | None, path: Path) -> LabelSpace:
    """The ``label_space`` argument, else ``<stem>.meta.json``, else ``meta.json`` beside the
    file ``path``; for a directory, its ``meta.json``, else ``<directory name>.meta.json``
    beside it."""
    if label_space is not None:
        try:
            return as_label_space(label_space)
        except ValueError as err:
            raise DataError(f"bad label_space: {err}", str(path)) from None
    if path.is_dir():
        candidates = (path / "meta.json", path.with_name(f"{path.name}.meta.json"))
    else:
        candidates = (path.with_name(f"{path.stem}.meta.json"), path.with_name("meta.json"))
    for meta in candidates:
        if meta.is_file():
            try:
                spec = json.loads(read_text(meta))
                return as_label_space(spec)
            except json.JSONDecodeError as err:
                raise DataError(f"bad JSON: {err.msg}", str(meta), err.lineno) from None
            except (ValueError, TypeError) as err:
                raise DataError(f"bad label space: {err}", str(meta)) from None
    sidecar = f"{path.name}.meta.json" if path.is_dir() else f"{path.stem}.meta.json"
    raise DataError(
        "no classes declared: set the config key data.label_space="
        "{names: [bad, ok, good], utilities: [-1, 0, 1]} (label_space= in Python), or write "
        f"{sidecar} or meta.json beside the data containing {LABEL_SPACE_EXAMPLE}",
        str(path),
    )


def parse_record(
    record: Mapping[str, Any],
    label_space: LabelSpace,
    *,
    default_id: str,
    path: str,
    line: int | None,
    prefix: str = "",
) -> tuple[AnnotatedExample | None, str]:
    """One native record -> ``(example, "")``, or ``(None, why)`` when it has no usable label.

    Raises :class:`DataError` (at ``path:line``, message starting with ``prefix``) for any
    structural problem or unknown label.
    """

    def fail(problem: str) -> DataError:
        return DataError(prefix + problem, path, line)

    if not isinstance(record, Mapping):
        raise fail(f"expected a JSON object per line, got {type(record).__name__}")
    item_id = record_id(record, default_id, fail)
    context = parse_context(record.get("context"), fail)
    response = record.get("response")
    if response is None:
        raise fail("missing required field 'response'")
    if not isinstance(response, str):
        raise fail(f"'response' must be a string, got {type(response).__name__}")
    if is_blank(response):
        raise fail(EMPTY_RESPONSE)
    has_labels = record.get("labels") is not None
    has_counts = record.get("counts") is not None
    if has_labels == has_counts:
        raise fail(
            "give exactly one of 'labels' (one label per annotator) or 'counts' (per class)"
            + (", not both" if has_labels else "; neither is present")
        )
    num_classes = label_space.num_classes
    annotations = None
    if has_labels:
        labels = record["labels"]
        if not isinstance(labels, (list, tuple)):
            raise fail(f"'labels' must be a list, got {type(labels).__name__}")
        annotators = record.get("annotators")
        if annotators is not None:
            if not isinstance(annotators, (list, tuple)):
                raise fail(f"'annotators' must be a list, got {type(annotators).__name__}")
            if len(annotators) != len(labels):
                raise fail(
                    f"'annotators' has {len(annotators)} entries but 'labels' has {len(labels)}"
                )
            for who in annotators:
                if not isinstance(who, (str, int)) or isinstance(who, bool) or who == "":
                    raise fail(f"annotator ids must be non-empty strings or integers, got {who!r}")
        indices, pairs = [], []
        for k, label in enumerate(labels):
            if label is None or (isinstance(label, str) and not label.strip()):
                continue  # this annotator gave no label
            try:
                index = label_space.index(label)
            except KeyError as err:
                raise fail(err.args[0]) from None
            indices.append(index)
            if annotators is not None:
                pairs.append((str(annotators[k]), index))
        counts = counts_of(indices, num_classes)
        if annotators is not None:
            annotations = pairs
        if not indices:
            return None, f"all {len(labels)} labels missing"
    else:
        counts = parse_counts(record["counts"], label_space, fail)
        if record.get("annotators") is not None:
            raise fail("'annotators' goes with 'labels', not with 'counts'")
        if counts.sum() == 0:
            return None, "all counts are zero"
    meta = {k: v for k, v in record.items() if k not in KNOWN_FIELDS}
    group = parse_group(record.get("group"), fail)
    if group is not None:
        meta["group"] = group
    return (
        AnnotatedExample(
            id=item_id,
            context=context,
            response=response,
            counts=counts,
            annotations=annotations,
            true_distribution=parse_true_distribution(
                record.get("true_distribution"), num_classes, fail
            ),
            meta=meta,
        ),
        "",
    )


def record_id(record: Mapping[str, Any], default_id: str, fail) -> str:
    """The id of a native record: its ``id`` as a string, or ``default_id`` when absent."""
    item_id = record.get("id")
    if item_id is None or item_id == "":
        return default_id
    if isinstance(item_id, (str, int)) and not isinstance(item_id, bool):
        return str(item_id)
    raise fail(f"'id' must be a string or an integer, got {type(item_id).__name__}")


def parse_context(value: Any, fail) -> list[str]:
    """A context as turns: a string is one turn, a list of strings is the turns, ``None`` (or
    absent) and ``""`` are no context. Anything else (``0``, ``false``, ``{}``, ``5``) raises
    ``fail(problem)``: a falsy value is not quietly taken as "no context"."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)) and all(isinstance(turn, str) for turn in value):
        return list(value)
    raise fail(
        f"'context' must be a string or a list of strings (or null for none), got "
        f"{type(value).__name__} {json.dumps(value, default=str)[:40]}"
    )


def parse_counts(value: Any, label_space: LabelSpace, fail) -> np.ndarray:
    num_classes = label_space.num_classes
    counts = np.zeros(num_classes, dtype=np.int64)
    if isinstance(value, (list, tuple)):
        if len(value) != num_classes:
            raise fail(
                f"'counts' has {len(value)} entries but there are {num_classes} classes "
                f"{list(label_space.names)}"
            )
        items = list(enumerate(value))
    elif isinstance(value, Mapping):
        items = []
        for key, count in value.items():
            try:
                index = label_space.index(key)
            except KeyError as err:
                raise fail(err.args[0]) from None
            if any(index == seen for seen, _ in items):
                raise fail(f"'counts' gives class {label_space.names[index]!r} twice")
            items.append((index, count))
    else:
        raise fail(f"'counts' must be a list or an object, got {type(value).__name__}")
    for index, count in items:
        if isinstance(count, bool) or not isinstance(count, (int, float)):
            raise fail(f"counts must be non-negative integers, got {count!r}")
        if count < 0 or (isinstance(count, float) and not count.is_integer()):
            raise fail(f"counts must be non-negative integers, got {count!r}")
        if count > MAX_COUNT:
            raise fail(f"counts must be at most {MAX_COUNT}, got {count!r}")
        counts[index] = int(count)
    return counts


def _jsonl_records(text: str, path: str):
    # split("\n"), not splitlines(): U+2028 and friends may sit unescaped inside JSON strings.
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw, object_pairs_hook=unique_keys)
        except json.JSONDecodeError as err:
            hint = " (native files are JSON Lines: one object per line)" if number == 1 else ""
            raise DataError(f"bad JSON: {json_problem(err)}{hint}", path, number) from None
        except JSON_ERRORS as err:
            raise DataError(f"bad JSON: {json_problem(err)}", path, number) from None
        if not isinstance(record, dict):
            raise DataError(
                f"expected a JSON object per line, got {type(record).__name__}", path, number
            )
        yield record, number


def _csv_list(cell: str, separator: str, column: str, fail) -> list:
    cell = cell.strip()
    if not cell:
        return []
    if cell.startswith("["):
        try:
            value = json.loads(cell)
        except JSON_ERRORS as err:
            raise fail(f"column {column!r}: bad JSON list: {json_problem(err)}") from None
        if not isinstance(value, list):
            raise fail(f"column {column!r}: expected a JSON list")
        return value
    return [part.strip() for part in cell.split(separator)]


def _csv_context(cell: str, fail) -> list[str]:
    stripped = cell.strip()
    if not stripped:
        return []
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            value = json.loads(stripped)
        except JSON_ERRORS:
            value = None
        if isinstance(value, list) and all(isinstance(turn, str) for turn in value):
            return value
    return cell.split(CONTEXT_SEPARATOR)


def _csv_records(text: str, path: str, label_space: LabelSpace):
    rows = csv_rows(text, path)
    try:
        header, header_line = next(rows)
    except StopIteration:
        raise DataError("empty CSV file (no header row)", path, 1) from None
    header = [h.strip() for h in header]
    columns = {h: k for k, h in enumerate(header)}
    if len(columns) != len(header):
        repeated = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"repeated CSV columns {repeated}", path, header_line)
    if "response" not in columns:
        raise DataError(
            f"missing required column 'response' (columns: {header})", path, header_line
        )
    count_columns = {}
    for h in header:
        if h.startswith(COUNT_PREFIX):
            try:
                count_columns[h] = label_space.index(h[len(COUNT_PREFIX) :])
            except KeyError as err:
                raise DataError(f"column {h!r}: {err.args[0]}", path, header_line) from None
            same = [c for c, index in count_columns.items() if index == count_columns[h]]
            if len(same) > 1:
                raise DataError(
                    f"columns {same} both count class "
                    f"{label_space.names[count_columns[h]]!r}; give one column per class",
                    path,
                    header_line,
                )
    if ("labels" in columns) == bool(count_columns):
        raise DataError(
            f"give exactly one of a 'labels' column or 'count_<class>' columns (columns: {header})",
            path,
            header_line,
        )
    if "annotators" in columns and count_columns:
        raise DataError("an 'annotators' column goes with 'labels', not counts", path, header_line)
    known = {"id", "context", "response", "labels", "annotators", *count_columns}
    for row, line in rows:
        if len(row) != len(header):
            raise DataError(
                f"row has {len(row)} fields but the header has {len(header)} "
                "(truncated row, or an unquoted comma?)",
                path,
                line,
            )

        def fail(problem: str, line=line) -> DataError:
            return DataError(problem, path, line)

        cell = dict(zip(header, row, strict=True))
        record: dict[str, Any] = {"response": cell["response"]}
        if cell.get("id", "").strip():
            record["id"] = cell["id"].strip()
        if "context" in cell:
            record["context"] = _csv_context(cell["context"], fail)
        if count_columns:
            counts = [0] * label_space.num_classes
            for column, index in count_columns.items():
                value = cell[column].strip()
                if not value:
                    continue
                try:
                    number = float(value)
                except ValueError:
                    raise fail(f"column {column!r}: expected a count, got {value!r}") from None
                if number < 0 or not number.is_integer():
                    raise fail(
                        f"column {column!r}: counts must be non-negative integers, got {value!r}"
                    )
                counts[index] += int(number)
            record["counts"] = counts
        else:
            record["labels"] = _csv_list(cell["labels"], LABEL_SEPARATOR, "labels", fail)
            if "annotators" in cell:
                annotators = _csv_list(cell["annotators"], LABEL_SEPARATOR, "annotators", fail)
                record["annotators"] = annotators if annotators else None
        record.update({k: v for k, v in cell.items() if k not in known})
        yield record, line
