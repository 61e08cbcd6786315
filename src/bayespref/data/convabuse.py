"""ConvAbuse (Cercas Curry et al., EMNLP 2021) in its original split CSVs.

Files: ``ConvAbuseEMNLPtrain.csv``, ``ConvAbuseEMNLPvalid.csv`` (and ``...test.csv``). One row
per item; for each of the 8 annotators ``k`` five one-hot columns
``Annotator{k}_is_abuse.{1,0,-1,-2,-3}`` give the abuse severity of the user turn.

- Example: ``context = [prev_agent, prev_user, agent]`` with empty turns dropped,
  ``response = user``; ``id = example_id`` as written in the file (e.g. ``"278.0"``);
  ``meta`` keeps ``conv_id`` and ``bot``.
- Annotators: ids ``Ann1`` .. ``Ann8`` (the ids the LeWiDi 2023 release uses for the same
  people). An annotator whose five cells are all empty did not label the item.
- Repeat annotations: some cells hold several comma-separated values (``"1, 1"``, ``"0, 1"``):
  the annotator labelled the item more than once (the data used for intra-annotator
  agreement). Each position is one annotation. ``repeats="first"`` (default) keeps the first,
  which is what LeWiDi 2023 kept (checked on every conflicting case in the train split);
  ``repeats="all"`` counts each repeat as an annotation by the same annotator.
- Malformed groups raise :class:`DataError` (file and physical line) whatever ``strict`` is:
  a value other than 0/1, cells of one group with different numbers of repeats, some cells of
  a group empty and others not, or a group (or repeat) with no 1 or with more than one 1.
  These are corrupt rows, not missing data, so they are never skipped silently.
- An item with no annotator at all has no usable label: skipped and counted
  (``DataError`` with ``strict=True``). An empty ``user`` turn (the response) raises
  :class:`DataError`.

Label schemes:

``severity`` (default): 5 classes, utility = severity:
    ``not abusive`` (1), ``ambiguous`` (0), ``mildly abusive`` (-1), ``strongly abusive`` (-2),
    ``very strongly abusive`` (-3); aliases ``"1"``, ``"0"``, ``"-1"``, ``"-2"``, ``"-3"``.
``binary``: LeWiDi's soft-label classes, ``not abusive`` (severity 1 or 0, utility 1) and
    ``abusive`` (-1, -2, -3, utility 0); aliases ``"0"``/``"1"`` as in LeWiDi's hard label.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from ._common import (
    EMPTY_RESPONSE,
    NO_USABLE_LABEL,
    Collector,
    counts_of,
    csv_rows,
    is_blank,
    read_text,
)
from .schema import AnnotatedDataset, AnnotatedExample, DataError, LabelSpace

logger = logging.getLogger(__name__)

SEVERITIES = (1, 0, -1, -2, -3)

CONVABUSE_SEVERITY = LabelSpace(
    names=(
        "not abusive",
        "ambiguous",
        "mildly abusive",
        "strongly abusive",
        "very strongly abusive",
    ),
    utilities=(1.0, 0.0, -1.0, -2.0, -3.0),
    aliases=(
        ("1", "not abusive"),
        ("0", "ambiguous"),
        ("-1", "mildly abusive"),
        ("-2", "strongly abusive"),
        ("-3", "very strongly abusive"),
    ),
)

CONVABUSE_BINARY = LabelSpace(
    names=("not abusive", "abusive"),
    utilities=(1.0, 0.0),
    aliases=(("0", "not abusive"), ("1", "abusive")),
)

LABEL_SCHEMES = ("severity", "binary")
# AnnotatorN_is_abuse.<severity>: N in ASCII digits, few enough for int() (not "Annotator²")
_SEVERITY_COLUMN = re.compile(r"Annotator([0-9]{1,9})_is_abuse\..+", re.DOTALL)


def convabuse_label_space(label_scheme: str) -> LabelSpace:
    if label_scheme == "severity":
        return CONVABUSE_SEVERITY
    if label_scheme == "binary":
        return CONVABUSE_BINARY
    raise ValueError(f"label_scheme must be one of {LABEL_SCHEMES}, got {label_scheme!r}")


def severity_class(severity: int, label_scheme: str) -> int:
    """Class index of a severity in {1, 0, -1, -2, -3} under ``label_scheme``."""
    if label_scheme == "binary":
        return 0 if severity >= 0 else 1
    return SEVERITIES.index(severity)


def load_convabuse(
    path: str | os.PathLike[str],
    *,
    label_scheme: str = "severity",
    repeats: str = "first",
    strict: bool = False,
    name: str | None = None,
) -> AnnotatedDataset:
    """Load an original ConvAbuse split CSV (see the module docstring for the mapping)."""
    path = Path(path)
    space = convabuse_label_space(label_scheme)
    if repeats not in ("first", "all"):
        raise ValueError(f"repeats must be 'first' or 'all', got {repeats!r}")
    text = read_text(path)
    source = str(path)
    rows = csv_rows(text, source)
    try:
        header, header_line = next(rows)
    except StopIteration:
        raise DataError("empty CSV file (no header row)", source, 1) from None
    columns = {h.strip(): k for k, h in enumerate(header)}
    required = ["example_id", "prev_agent", "prev_user", "agent", "user"]
    missing = [c for c in required if c not in columns]
    annotator_ids = sorted(
        {int(m[1]) for m in map(_SEVERITY_COLUMN.fullmatch, columns) if m is not None}
    )
    # a column read twice would silently use its last copy (other columns may repeat)
    used = [h.strip() for h in header]
    used = [h for h in used if h in (*required, "conv_id", "bot") or _SEVERITY_COLUMN.fullmatch(h)]
    repeated = sorted({h for h in used if used.count(h) > 1})
    if repeated:
        raise DataError(f"repeated CSV columns {repeated}", source, header_line)
    if missing or not annotator_ids:
        raise DataError(
            f"not a ConvAbuse split CSV: missing columns {missing or ['AnnotatorN_is_abuse.*']}",
            source,
            header_line,
        )
    groups = []
    for k in annotator_ids:
        names = [f"Annotator{k}_is_abuse.{s}" for s in SEVERITIES]
        absent = [n for n in names if n not in columns]
        if absent:
            raise DataError(f"missing columns {absent}", source, header_line)
        groups.append((f"Ann{k}", [columns[n] for n in names]))

    collector = Collector(source, space, strict=strict, name=name or path.stem, logger=logger)
    for row, line in rows:
        collector.read()
        if len(row) != len(header):
            raise DataError(
                f"row has {len(row)} fields but the header has {len(header)} (truncated row?)",
                source,
                line,
            )
        annotations = []
        for annotator, indices in groups:
            for severity in _group_severities([row[i] for i in indices], annotator, source, line)[
                : None if repeats == "all" else 1
            ]:
                annotations.append((annotator, severity_class(severity, label_scheme)))
        item_id = row[columns["example_id"]].strip()
        if is_blank(row[columns["user"]]):
            raise DataError(f"column 'user': {EMPTY_RESPONSE}", source, line)
        if not annotations:
            collector.skip(
                NO_USABLE_LABEL, line, "no annotator labelled this item", item_id=item_id
            )
            continue
        turns = [row[columns[c]] for c in ("prev_agent", "prev_user", "agent")]
        example = AnnotatedExample(
            id=item_id,
            context=[t for t in turns if t.strip()],
            response=row[columns["user"]],
            counts=counts_of([c for _, c in annotations], space.num_classes),
            annotations=annotations,
            meta={key: row[columns[key]] for key in ("conv_id", "bot") if key in columns},
        )
        collector.keep(example, line)
    return collector.finish()


def _group_severities(cells: list[str], annotator: str, path: str, line: int) -> list[int]:
    """Severities from one annotator's five one-hot cells (one per repeat); [] if absent."""
    parts = [[p.strip() for p in cell.split(",")] if cell.strip() else [] for cell in cells]
    if not any(parts):
        return []

    def fail(problem: str) -> DataError:
        shown = dict(zip((f"is_abuse.{s}" for s in SEVERITIES), cells, strict=True))
        return DataError(f"{annotator}: {problem}: {shown}", path, line)

    if any(not p for p in parts):
        raise fail("some severity cells are empty and others are not")
    repeats = {len(p) for p in parts}
    if len(repeats) != 1:
        raise fail("severity cells hold different numbers of repeat annotations")
    severities = []
    for j in range(repeats.pop()):
        values = [p[j] for p in parts]
        if any(v not in ("0", "1") for v in values):
            raise fail("one-hot severity cells must be 0 or 1")
        if values.count("1") != 1:
            raise fail(f"expected exactly one severity marked 1, found {values.count('1')}")
        severities.append(SEVERITIES[values.index("1")])
    return severities
