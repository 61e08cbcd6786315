"""The Motivational Interviewing (MI) dataset used by Wang et al. 2023 (``MI Dataset.csv``).

CSV columns: ``dialog_id, turn, author, text, ann1, ann2, judge 1 annotation,
judge 2 annotation`` (header names are matched ignoring case and surrounding spaces; other
columns are kept in ``meta``). ``author`` is ``speaker`` (the client) or ``listener`` (the
counsellor). The four annotation columns hold one of 15 MI codes or ``-`` (missing).

- Items: every ``listener`` turn is one item, ``response = text``. Its context is the last
  ``context_turns`` ``speaker`` turns before it in the same dialog (default 1, the speaker turn
  being answered; ``None`` = all earlier speaker turns; 0 = no context), oldest first. An
  empty listener ``text`` raises :class:`DataError` (nothing to judge). Turns
  are ordered by ``turn`` within a dialog when every ``turn`` there is a number, else by file
  order. ``id = "<dialog_id>:<turn>"``; a repeated id raises :class:`DataError` naming both
  lines. ``read`` in the report counts listener turns; speaker turns only provide context.
- Annotators: ids ``ann1``, ``ann2``, ``judge1``, ``judge2``; ``-`` or an empty cell is a
  missing annotation. A listener turn with all four missing is skipped and counted
  (``DataError`` with ``strict=True``).
- Classes (the reference code's mapping), utilities and codes:

  - ``other`` (utility 0): Open Question, Closed Question, Complex Reflection, Simple
    Reflection, Give Information, Self-Disclose, Other;
  - ``MI-adherent`` (1): Advise with Permission, Affirm, Emphasize Autonomy, Support;
  - ``MI non-adherent`` (-1): Confront, Warn, Direct, Advise without Permission.

  Codes are matched ignoring case and repeated spaces; an unknown code raises
  :class:`DataError` listing the 15 codes. The codes are aliases of the label space, so native
  files can use them too. Majority ties go to the less preferred class (``MI non-adherent``
  first), which matches the reference code's ``+0.5`` toward its last class; the reference
  ranks responses by P(MI non-adherent), available as the ``worst-class`` score.
"""

from __future__ import annotations

import logging
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

MI_CODES = {
    "Open Question": "other",
    "Closed Question": "other",
    "Complex Reflection": "other",
    "Simple Reflection": "other",
    "Give Information": "other",
    "Self-Disclose": "other",
    "Other": "other",
    "Advise with Permission": "MI-adherent",
    "Affirm": "MI-adherent",
    "Emphasize Autonomy": "MI-adherent",
    "Support": "MI-adherent",
    "Confront": "MI non-adherent",
    "Warn": "MI non-adherent",
    "Direct": "MI non-adherent",
    "Advise without Permission": "MI non-adherent",
}

MI_LABEL_SPACE = LabelSpace(
    names=("other", "MI-adherent", "MI non-adherent"),
    utilities=(0.0, 1.0, -1.0),
    aliases=tuple(MI_CODES.items()),
)

ANNOTATION_COLUMNS = {
    "ann1": "ann1",
    "ann2": "ann2",
    "judge 1 annotation": "judge1",
    "judge 2 annotation": "judge2",
}
MISSING = ("", "-")
_SPACES = re.compile(r"\s+")


def _normalise(text: str) -> str:
    return _SPACES.sub(" ", text.strip()).lower()


_CODE_INDEX = {_normalise(code): MI_LABEL_SPACE.names.index(cls) for code, cls in MI_CODES.items()}


def mi_class(code: str, path: str, line: int) -> int:
    """Class index of an MI code; :class:`DataError` listing the 15 codes when unknown."""
    try:
        return _CODE_INDEX[_normalise(code)]
    except KeyError:
        raise DataError(
            f"unknown MI code {code!r}; allowed: {list(MI_CODES)} (or '-' for missing)",
            path,
            line,
        ) from None


def load_mi(
    path: str | Path,
    *,
    context_turns: int | None = 1,
    strict: bool = False,
    name: str | None = None,
) -> AnnotatedDataset:
    """Load an MI dataset CSV (see the module docstring for pairing and classes)."""
    if context_turns is not None and (isinstance(context_turns, bool) or context_turns < 0):
        raise ValueError(f"context_turns must be >= 0 or None, got {context_turns!r}")
    path = Path(path)
    source = str(path)
    rows = csv_rows(read_text(path), source)
    try:
        header, header_line = next(rows)
    except StopIteration:
        raise DataError("empty CSV file (no header row)", source, 1) from None
    columns = {_normalise(h): k for k, h in enumerate(header)}
    required = ["dialog_id", "turn", "author", "text", *ANNOTATION_COLUMNS]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"missing MI columns {missing} (header: {header})", source, header_line)
    # a column read twice would silently use its last copy
    names = [_normalise(h) for h in header]
    repeated = sorted({n for n in names if n in required and names.count(n) > 1})
    if repeated:
        raise DataError(f"repeated MI columns {repeated} (header: {header})", source, header_line)
    extra = [(h.strip(), k) for k, h in enumerate(header) if _normalise(h) not in required]

    dialogs: dict[str, list[tuple[list[str], int]]] = {}
    for row, line in rows:
        if len(row) != len(header):
            raise DataError(
                f"row has {len(row)} fields but the header has {len(header)} (truncated row?)",
                source,
                line,
            )
        author = _normalise(row[columns["author"]])
        if author not in ("speaker", "listener"):
            raise DataError(
                f"unknown author {row[columns['author']]!r}; allowed: ['speaker', 'listener']",
                source,
                line,
            )
        dialogs.setdefault(row[columns["dialog_id"]].strip(), []).append((row, line))

    collector = Collector(
        source, MI_LABEL_SPACE, strict=strict, name=name or path.stem, logger=logger
    )
    for dialog_id, turns in dialogs.items():
        turns = _ordered(turns, columns["turn"])
        speaker_turns: list[str] = []
        for row, line in turns:
            text = row[columns["text"]]
            if _normalise(row[columns["author"]]) == "speaker":
                speaker_turns.append(text)
                continue
            collector.read()
            if is_blank(text):
                raise DataError(f"column 'text': {EMPTY_RESPONSE}", source, line)
            annotations = []
            for column, annotator in ANNOTATION_COLUMNS.items():
                code = row[columns[column]].strip()
                if code not in MISSING:
                    annotations.append((annotator, mi_class(code, source, line)))
            turn = row[columns["turn"]].strip()
            item_id = f"{dialog_id}:{turn}"
            if not annotations:
                collector.skip(
                    NO_USABLE_LABEL, line, "all four MI annotations are '-'", item_id=item_id
                )
                continue
            if context_turns is None:
                context = list(speaker_turns)
            else:
                context = speaker_turns[-context_turns:] if context_turns else []
            example = AnnotatedExample(
                id=item_id,
                context=context,
                response=text,
                counts=counts_of([c for _, c in annotations], MI_LABEL_SPACE.num_classes),
                annotations=annotations,
                meta={
                    "dialog_id": dialog_id,
                    "turn": turn,
                    "codes": [row[columns[c]].strip() for c in ANNOTATION_COLUMNS],
                    **{h: row[k] for h, k in extra},
                },
            )
            collector.keep(example, line)
    return collector.finish()


def _ordered(turns: list[tuple[list[str], int]], turn_column: int):
    try:
        keys = [float(row[turn_column]) for row, _ in turns]
    except ValueError:
        return turns
    return [t for _, t in sorted(zip(keys, turns, strict=True), key=lambda kt: kt[0])]
