"""Property-based fuzzing of every file loader (issue "Reliability", part 1).

What runs
---------
- Five hypothesis tests, one per format -- native JSONL, native CSV, LeWiDi JSON, ConvAbuse
  CSV, MI CSV -- each on ``FUZZ_EXAMPLES = 200`` generated files (1000 files), the fault of
  each file drawn at random from that format's list.
- ``test_fuzz_failure_kinds_reached``: every fault of every format (78 of them: 16 JSONL,
  17 CSV, 18 LeWiDi, 13 ConvAbuse, 14 MI) on ``SWEEP_EXAMPLES = 5`` files each (390 files),
  the first of them the simplest; so that every fault is exercised, whatever the draws of the
  tests above, and the kinds of failure reached are computed by this test alone.

All are derandomized (the same files on every run, no example database). The module takes
35-45 s on two busy cores (``--durations`` shows each test).

Each generated file is a valid file -- random texts (any Unicode, newlines, quotes, commas,
NUL), ids as strings/integers/absent, contexts in every documented spelling, labels mixing
class names, aliases, indices (integer, float, string, zero-padded) and surrounding spaces,
null/empty labels (missing annotators), items with no usable label, extra fields and columns,
blank lines, CRLF, a BOM, fields of 100k characters, CSV fields spanning lines -- with at most
one fault injected at a known line:

- exact faults, whose ``DataError`` must point at that very line: a truncated or random or
  deeply nested JSON line, a wrong type in every field, an unknown label, a repeated id, a
  repeated key inside an object, a CSV row with a field too many or too few, a bad count,
  a bad JSON list, bad annotator lists, broken headers (missing, repeated, conflicting
  columns), a CSV field over the csv module's 131072-character limit, malformed ConvAbuse
  one-hot groups, an unknown MI code or author, stray characters and trailing garbage in
  LeWiDi JSON, bytes that are not UTF-8 (often at the very start of a line), a UTF-16 file;
- faults whose effect cannot be foretold (a file truncated at a random byte, a random line,
  a quote left open so that it spans the following lines): the load must succeed or raise
  ``DataError`` at or after the damaged line, and items before that line must come out right.

Checks, per file: the load either succeeds, and then ``read == kept + skipped``, nothing is
lost (``read`` = items written, ``skipped`` = items written without a usable label), every
kept example has the counts, annotations, id, response, context and meta computed here from
the generated data; or it raises ``DataError`` whose text is ``path:line: problem`` with the
line inside the file and, for an exact fault, equal to the fault's line (or to an earlier item
without usable label when ``strict=True``), and whose kind is the fault's. Any other exception
fails the test.

Kinds of failure reached (``kind_of(DataError.problem)``, 18 with the skip; the fuzz tests
count theirs in ``KINDS_REACHED``, the last test recomputes and asserts them): bad JSON, bad
CSV, not UTF-8, unknown label, unknown author, duplicate id, wrong field count, missing
column, missing field, repeated column, labels/counts conflict, bad count, bad annotators,
bad one-hot group, wrong type, empty file, no usable label (strict), and no usable label
(skipped: a load that succeeds and counts skipped items).
"""

from __future__ import annotations

import collections
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayespref.data import (
    LEWIDI_LABEL_SPACES,
    DataError,
    LabelSpace,
    load_convabuse,
    load_lewidi,
    load_mi,
    load_native,
)
from bayespref.data.convabuse import SEVERITIES, convabuse_label_space
from bayespref.data.mi import MI_CODES, MI_LABEL_SPACE

FUZZ_EXAMPLES = 200  # generated files per fuzz test (one test per format)
SWEEP_EXAMPLES = 5  # generated files per fault in test_fuzz_failure_kinds_reached
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
SWEEP = settings(
    max_examples=SWEEP_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

KINDS_REACHED: collections.Counter = collections.Counter()
"""Kinds of outcome reached by the fuzz tests of this run (see :func:`kind_of`)."""

# --- kinds of failure ------------------------------------------------------------------------

_PREFIX = re.compile(r"""(?:(?:item|column) (?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|Ann\d+): """)
KINDS = (
    ("not UTF-8", r"not valid UTF-8"),
    ("bad CSV", r"bad CSV"),
    ("bad JSON", r"bad JSON|'text' is not the expected JSON"),
    ("no usable label (strict)", r"no usable label"),
    ("unknown label", r"unknown label|unknown MI code"),
    ("unknown author", r"unknown author"),
    ("duplicate id", r"duplicate id"),
    ("wrong field count", r"row has \d+ fields"),
    ("missing column", r"missing (required column|MI columns|columns)|not a ConvAbuse split CSV"),
    ("missing field", r"missing required field"),
    ("repeated column", r"repeated (CSV|MI) columns|columns .* both count class"),
    ("labels/counts conflict", r"give exactly one of|(an )?'annotators'( column)? goes with"),
    ("bad count", r"counts must be|expected a count|'counts' has \d+ entries|'counts' gives"),
    ("bad annotators", r"'annotators' has \d+|\d+ annotators but|annotator ids must|empty entry"),
    ("bad one-hot group", r"some severity cells|severity cells hold|one-hot|expected exactly one"),
    ("wrong type", r"'[a-z]+' must be|expected an object|expected a JSON object"),
    ("empty file", r"empty CSV file"),
    ("empty response", r"the response is empty"),
)


def kind_of(problem: str) -> str:
    """The kind of a ``DataError.problem``: its fixed opening, after any ``item 'id': ``,
    ``column 'name': `` or ``AnnN: `` prefix (which may hold any text)."""
    rest = _PREFIX.sub("", problem, count=1) if _PREFIX.match(problem) else problem
    for kind, pattern in KINDS:
        if re.match(pattern, rest, re.S):
            return kind
    return f"unclassified: {problem[:80]}"


# --- generated files and what the loaders must make of them ----------------------------------


@dataclass
class Item:
    """What the loader must produce for one written item (the oracle)."""

    chunk: int  # index of the chunk that holds it in its Doc
    id: str | None  # None: the default id <file name>:<line>
    counts: tuple[int, ...] | None  # None: no usable label (skipped; DataError if strict)
    annotations: list | None = None
    response: str | None = None
    context: list[str] | None = None  # None: not checked
    meta: dict = field(default_factory=dict)
    meta_exact: bool = True
    line: int = 0  # filled in by finish()
    rank: tuple = ()  # processing order; (1, line, chunk) unless set


@dataclass
class Doc:
    """A file as chunks of text (a line, a CSV row that may span lines, a JSON member)."""

    chunks: list[str]
    bom: bool = False

    def text(self) -> str:
        return "".join(self.chunks)

    def line_of(self, k: int) -> int:
        return 1 + sum(c.count("\n") for c in self.chunks[:k])

    def chunk_at(self, q: int) -> int:
        pos = 0
        for k, c in enumerate(self.chunks):
            pos += len(c)
            if q < pos:
                return k
        return len(self.chunks) - 1

    def data(self) -> bytes:
        return (b"\xef\xbb\xbf" if self.bom else b"") + self.text().encode("utf-8")

    def insert(self, k: int, chunk: str, items: list[Item], newline: str) -> None:
        """Insert ``chunk`` as chunk ``k``, on a line of its own."""
        if k > 0 and not self.chunks[k - 1].endswith("\n"):
            self.chunks[k - 1] += newline
        self.chunks.insert(k, chunk)
        for it in items:
            if it.chunk >= k:
                it.chunk += 1


@dataclass
class Case:
    loader: str
    name: str
    data: bytes
    kwargs: dict
    strict: bool
    items: list[Item]
    files: dict
    fault: str = "none"
    fault_line: int | None = None
    fault_rank: tuple | None = None
    exact: bool = True
    kinds: tuple[str, ...] = ()

    def _repr_pretty_(self, printer, cycle) -> None:  # how hypothesis shows a failing case
        printer.text(repr(self))

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 3000 else self.data[:3000] + b"..."
        return (
            f"Case({self.loader} {self.name!r} kwargs={self.kwargs} strict={self.strict} "
            f"fault={self.fault!r} line={self.fault_line} exact={self.exact} "
            f"kinds={self.kinds} files={self.files} data={shown!r})"
        )


LOADERS = {
    "jsonl": load_native,
    "csv": load_native,
    "lewidi": load_lewidi,
    "convabuse": load_convabuse,
    "mi": load_mi,
}
FILE_ORDER = {"jsonl": True, "csv": True, "lewidi": True, "convabuse": True, "mi": False}


def finish(loader, name, doc, items, kwargs, strict, files=None, *, fault="none", chunk=None,
           line=None, exact=True, kinds=(), rank=None, data=None) -> Case:  # fmt: skip
    for it in items:
        it.line = doc.line_of(it.chunk)
        it.rank = it.rank or (1, it.line, it.chunk)
    if chunk is not None:
        line = doc.line_of(chunk)
    if fault != "none" and rank is None:
        rank = (1, line, math.inf if chunk is None else chunk)
    return Case(
        loader, name, doc.data() if data is None else data, kwargs, strict, items, files or {},
        fault, line, rank, exact, tuple(kinds),
    )  # fmt: skip


def content_lines(data: bytes) -> int:
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()
    return max(1, len(pieces))


# --- the check ---------------------------------------------------------------------------


def check(case: Case, seen: collections.Counter | None = None) -> None:
    """Load ``case`` and check the outcome against its oracle; record the kind reached."""
    seen = KINDS_REACHED if seen is None else seen
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / case.name
        path.write_bytes(case.data)
        for name, text in case.files.items():
            (Path(folder) / name).write_text(text, encoding="utf-8")
        try:
            dataset = LOADERS[case.loader](path, strict=case.strict, **case.kwargs)
        except DataError as err:
            kind = kind_of(err.problem)
            seen[kind] += 1
            check_error(case, path, err, kind)
        else:
            if dataset.report.skipped:
                seen["no usable label (skipped)"] += 1
            check_loaded(case, dataset)


def check_error(case: Case, path: Path, err: DataError, kind: str) -> None:
    assert not kind.startswith("unclassified"), f"{kind}\n{err}"
    assert err.path == str(path) and err.line is not None, f"no file and line: {err}"
    assert str(err) == f"{path}:{err.line}: {err.problem}"
    n = content_lines(case.data)
    assert 1 <= err.line <= n, f"line {err.line} outside the file's {n} lines: {err}"
    strict_skips = [it for it in case.items if it.counts is None] if case.strict else []
    events = [(it.rank, 1, it.line, "no usable label (strict)") for it in strict_skips]
    if case.fault == "none":
        assert events, f"a valid file failed: {err}"
        _, _, line, want = min(events)
        assert (err.line, kind) == (line, want), f"expected {want} at line {line}: {err}"
    elif case.exact:
        events.append((case.fault_rank, 0, case.fault_line, None))
        _, _, line, want = min(events)
        assert err.line == line, f"expected an error at line {line} ({case.fault}): {err}"
        if want is not None:
            assert kind == want, f"expected {want}: {err}"
        elif case.kinds:
            assert kind in case.kinds, f"expected one of {case.kinds} ({case.fault}): {err}"
    elif FILE_ORDER[case.loader] and kind != "empty file":
        allowed = {it.line for it in strict_skips if it.rank < case.fault_rank}
        allowed |= set(range(case.fault_line, n + 1))
        assert err.line in allowed, f"error before the damaged line {case.fault_line}: {err}"


def check_example(case: Case, example, item: Item, full: bool) -> None:
    want_id = item.id if item.id is not None else f"{case.name}:{item.line}"
    assert example.id == want_id
    counts = example.counts
    assert counts.dtype.kind == "i" and counts.shape == (len(item.counts),)
    assert tuple(int(c) for c in counts) == item.counts, (example.id, counts, item.counts)
    assert example.annotations == item.annotations, example.id
    if not full:
        return
    assert example.response == item.response, example.id
    if item.context is not None:
        assert example.context == item.context, example.id
    if item.meta_exact:
        assert example.meta == item.meta, example.id
    else:
        assert {k: example.meta.get(k) for k in item.meta} == item.meta, example.id


def check_loaded(case: Case, dataset) -> None:
    report = dataset.report
    assert report.read == report.kept + report.skipped, report
    assert len(dataset) == report.kept
    for example in dataset:
        assert int(example.counts.sum()) > 0 and (example.counts >= 0).all(), example.id
    usable = [it for it in case.items if it.counts is not None]
    unusable = [it for it in case.items if it.counts is None]
    if case.fault == "none":
        assert not (case.strict and unusable), "strict=True kept going past an unusable item"
        assert (report.read, report.kept, report.skipped) == (
            len(case.items),
            len(usable),
            len(unusable),
        ), report
        if unusable:
            assert dict(report.reasons) == {"no usable label": len(unusable)}
        assert len(dataset) == len(usable)
        for example, item in zip(dataset, sorted(usable, key=lambda it: it.rank), strict=True):
            check_example(case, example, item, full=True)
        return
    assert not case.exact, f"expected an error at line {case.fault_line} ({case.fault})"
    # damage that cannot be foretold: the items before the damaged line come out right
    intact = [it for it in case.items if it.line < case.fault_line]
    assert report.read >= len(intact), report
    by_id = {e.id: e for e in dataset}
    for item in intact:
        want_id = item.id if item.id is not None else f"{case.name}:{item.line}"
        if item.counts is None:
            assert want_id not in by_id
        else:
            check_example(case, by_id[want_id], item, full=FILE_ORDER[case.loader])


# --- shared strategies ---------------------------------------------------------------------

TEXT = st.text(max_size=12)
HUGE_TEXT = st.sampled_from('xé🙂\n",|\u2028').map(lambda c: c * 100_000)
PAD = st.sampled_from(["", " ", "\t", "\u3000"])
BAD_UTF8 = st.sampled_from(
    [b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80",
     b"\xc0\xaf", b"\xf5\x80\x80\x80", b"\xf0\x9f\x98"]
)  # fmt: skip
JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
BYTE_FAULTS = ("not UTF-8", "UTF-16 file", "truncated file")
OVERSIZED = "y" * 131_073  # one more character than the csv module's default field limit,
# which the loaders raise: an "oversized field" loads like any other (issue 12)


def text_for(draw, huge: bool) -> str:
    """A response: never blank (an empty response is an error, tested in test_user_errors)."""
    text = draw(HUGE_TEXT) if huge else draw(TEXT)
    return text if text.strip() else text + "r"


def huge_item(draw, n: int) -> int:
    """Index of the item that gets a 100k-character field, or -1 (most files)."""
    return draw(st.integers(0, n - 1)) if n and draw(st.integers(0, 7)) == 0 else -1


def byte_fault(draw, doc: Doc, fault: str, *, json_text: bool = False) -> dict:
    text = doc.text()
    bom = b"\xef\xbb\xbf" if doc.bom else b""
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    near_line_start = st.one_of(
        st.sampled_from(starts),  # the edge cases: a fault at the very start of a line
        st.sampled_from([q + k for q in starts for k in (1, 2) if q + k <= len(text)] or [0]),
    )
    if fault == "not UTF-8":
        q = draw(st.one_of(st.integers(0, len(text)), near_line_start))
        line = text.count("\n", 0, q) + 1
        data = bom + text[:q].encode() + draw(BAD_UTF8) + text[q:].encode()
        return dict(data=data, line=line, rank=(-1, line), kinds=("not UTF-8",))
    if fault == "UTF-16 file":
        return dict(data=text.encode("utf-16"), line=1, rank=(-1, 1), kinds=("not UTF-8",))
    assert fault == "truncated file"
    q = draw(
        st.one_of(st.integers(0, len(text) - 1), near_line_start).filter(lambda q: q < len(text))
    )
    char = text[q].encode()
    data = bom + text[:q].encode() + char[: draw(st.integers(0, len(char) - 1))]
    line = doc.line_of(doc.chunk_at(q))
    if json_text:  # an error at the end points at the last line with content
        line = min(line, text[:q].rstrip(" \t\n\r").count("\n") + 1)
    return dict(data=data, line=line, exact=False)


def lay_out_csv(draw, doc, header, rows, items, nl, quote_all, max_leading_blanks) -> int:
    """(Re)write ``doc`` from the header and the rows, with drawn blank lines before the header
    and between rows; records each item's chunk and returns the header's chunk index."""
    doc.chunks = [nl] * draw(st.integers(0, max_leading_blanks))
    header_chunk = len(doc.chunks)
    doc.chunks.append(csv_row(header, nl, quote_all))
    for k, cells in enumerate(rows):
        doc.chunks += [nl] * draw(st.integers(0, 1))
        items[k].chunk = len(doc.chunks)
        doc.chunks.append(csv_row([cells.get(h, "") for h in header], nl, quote_all))
    return header_chunk


def csv_row(cells: list[str], newline: str, quote_all: bool) -> str:
    """One CSV record (RFC 4180 quoting, written here rather than by the csv module)."""
    out = []
    for cell in cells:
        if quote_all or any(c in cell for c in ',"\r\n') or (cell == "" and len(cells) == 1):
            cell = '"' + cell.replace('"', '""') + '"'
        out.append(cell)
    return ",".join(out) + newline


def garbage_line(draw) -> str:
    return draw(st.one_of(st.text(min_size=1, max_size=30), st.sampled_from(['"', "a,b", ","])))


# --- native format ---------------------------------------------------------------------------

NATIVE_SPACE = LabelSpace(
    names=("bad", "ok", "good"),
    utilities=(-1.0, 0.0, 1.0),
    aliases=(("-1", "bad"), ("neutral", "ok"), ("+1", "good"), ("👍", "good")),
)
C = NATIVE_SPACE.num_classes
_NATIVE_WORDS = {*NATIVE_SPACE.names, *(a for a, _ in NATIVE_SPACE.aliases)}
_SPELLINGS = {
    i: [name, str(i), "0" + str(i), *(a for a, t in NATIVE_SPACE.aliases if t == name)]
    for i, name in enumerate(NATIVE_SPACE.names)
}
KNOWN_FIELDS = ("id", "context", "response", "labels", "counts", "annotators")


def spelling(i: int):
    """Text for class ``i``: its name, an alias, or its index, maybe padded with spaces."""
    return st.tuples(PAD, st.sampled_from(_SPELLINGS[i]), PAD).map("".join)


def native_label(in_json: bool):
    """(class index, written label); in JSON also the integer or float index."""

    def written(i):
        return st.one_of(spelling(i), st.just(i), st.just(float(i))) if in_json else spelling(i)

    return st.integers(0, C - 1).flatmap(lambda i: written(i).map(lambda v: (i, v)))


def missing_label(in_json: bool):
    return st.sampled_from([None, "", " "] if in_json else ["", " "]).map(lambda v: (None, v))


def label_list(in_json: bool):
    """(class or None, written label) per annotator; mostly labels, some missing."""
    one = st.one_of(*[native_label(in_json)] * 3, missing_label(in_json))
    return st.one_of(*[st.lists(one, min_size=1, max_size=6)] * 3, st.lists(one, max_size=2))


def known_native(v) -> bool:
    """Whether ``v`` is a valid native label, or a missing one."""
    if v is None:
        return True
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return 0 <= v < C
    if isinstance(v, float):
        return v.is_integer() and 0 <= v < C
    if not isinstance(v, str):
        return False
    t = v.strip()
    if t == "" or t in _NATIVE_WORDS:
        return True
    return re.fullmatch(r"-?[0-9]{1,100}", t) is not None and 0 <= int(t) < C


NASTY_LABELS = st.sampled_from(
    [
        "3",
        "99",
        "-2",
        "1" * 40,
        "1" * 5000,
        "²",
        "٣",
        "--1",
        "-",
        "1.5",
        "1e0",
        "0x1",
        "Bad",
        "good!",
    ]
)
UNKNOWN_STR = st.one_of(NASTY_LABELS, NASTY_LABELS, st.text(max_size=8)).filter(
    lambda v: not known_native(v)
)
UNKNOWN_JSON = st.one_of(
    UNKNOWN_STR,
    st.sampled_from([3, -1, 99, 1.5, True, False, {}, [], [0], {"a": 1}, 10**30, 1e300, -0.5]),
)
UNKNOWN_CELL = UNKNOWN_STR.filter(lambda v: "|" not in v and not v.strip().startswith("["))
ANNOTATOR_JSON = st.one_of(st.text(min_size=1, max_size=5), st.integers(-5, 10**6))
ANNOTATOR_CELL = st.text(max_size=5).filter(
    lambda s: s.strip() and "|" not in s and not s.strip().startswith("[")
)
EXTRA_COLUMN = st.text(max_size=6).filter(
    lambda s: s.strip() not in KNOWN_FIELDS and not s.strip().startswith("count_")
)


def label_space_delivery(draw, name: str) -> tuple[dict, dict]:
    how = draw(st.sampled_from(["object", "mapping", "meta.json", "stem.meta.json"]))
    spec = json.dumps(NATIVE_SPACE.to_dict())
    if how == "object":
        return {"label_space": NATIVE_SPACE}, {}
    if how == "mapping":
        return {"label_space": NATIVE_SPACE.to_dict()}, {}
    if how == "meta.json":
        return {}, {"meta.json": spec}
    return {}, {f"{Path(name).stem}.meta.json": spec}


def counts_tuple(indices) -> tuple[int, ...]:
    counter = collections.Counter(indices)
    return tuple(counter[i] for i in range(C))


@st.composite
def jsonl_record(draw, k: int, huge: bool, mode: str | None = None):
    rec: dict = {}
    item_id = None
    id_kind = draw(st.sampled_from(["absent", "null", "empty", "int", "str"]))
    if id_kind == "int":
        rec["id"] = 1000 + k
        item_id = str(1000 + k)
    elif id_kind == "str":
        item_id = rec["id"] = draw(st.text(max_size=6)) + f"#{k}"
    elif id_kind != "absent":
        rec["id"] = None if id_kind == "null" else ""
    context: list[str] = []
    ctx_kind = draw(st.sampled_from(["absent", "null", "empty", "str", "list"]))
    if ctx_kind == "str":
        rec["context"] = draw(st.text(min_size=1, max_size=10))
        context = [rec["context"]]
    elif ctx_kind == "list":
        context = rec["context"] = draw(st.lists(st.text(max_size=8), max_size=3))
    elif ctx_kind != "absent":
        rec["context"] = None if ctx_kind == "null" else ""
    response = rec["response"] = text_for(draw, huge)
    mode = mode or draw(st.sampled_from(JSONL_MODES))
    annotations = None
    if mode == "unusable":  # every label missing, or every count zero
        counts = (0,) * C
        how = draw(st.sampled_from(["labels", "annotated", "counts list", "counts object"]))
        if how in ("labels", "annotated"):
            rec["labels"] = draw(
                st.lists(missing_label(True), max_size=3).map(lambda ls: [v for _, v in ls])
            )
            if how == "annotated":
                rec["annotators"] = [f"w{a}" for a in range(len(rec["labels"]))]
        elif how == "counts list":
            rec["counts"] = [draw(st.sampled_from([0, 0.0])) for _ in range(C)]
        else:
            rec["counts"] = {
                draw(spelling(i)): 0 for i in draw(st.lists(st.integers(0, C - 1), unique=True))
            }
    elif mode.startswith("labels"):
        labels = draw(label_list(True))
        rec["labels"] = [v for _, v in labels]
        if mode == "labels+annotators":
            who = rec["annotators"] = draw(
                st.lists(ANNOTATOR_JSON, min_size=len(labels), max_size=len(labels))
            )
            annotations = [(str(a), i) for a, (i, _) in zip(who, labels) if i is not None]
        counts = counts_tuple(i for i, _ in labels if i is not None)
    elif mode == "counts list":
        counts = tuple(draw(st.lists(st.integers(0, 4), min_size=C, max_size=C)))
        rec["counts"] = [float(c) if draw(st.booleans()) else c for c in counts]
    else:
        obj, values = {}, [0] * C
        for i in draw(st.lists(st.integers(0, C - 1), unique=True, max_size=C)):
            values[i] = draw(st.integers(0, 4))
            obj[draw(spelling(i))] = values[i]
        rec["counts"], counts = obj, tuple(values)
    extras = draw(
        st.dictionaries(
            st.text(max_size=6).filter(lambda s: s not in KNOWN_FIELDS), JSON_VALUE, max_size=2
        )
    )
    rec.update(extras)
    rec = {key: rec[key] for key in draw(st.permutations(list(rec)))}
    usable = sum(counts) > 0
    item = Item(
        chunk=-1,
        id=item_id,
        counts=counts if usable else None,
        annotations=annotations,
        response=response,
        context=context,
        meta=extras,
    )
    return rec, item


JSONL_MODES = ("labels", "labels+annotators", "counts list", "counts object")
JSONL_FAULTS = (
    "none", "unusable item", "unusable item, strict", "truncated line", "random line",
    "nested too deep", "wrong type", "labels/counts conflict", "bad counts", "bad annotators",
    "unknown label", "duplicate id", "duplicate key", *BYTE_FAULTS,
)  # fmt: skip
WRONG = {
    "id": [True, False, 1.5, [], {}, ["a"]],
    "context": [True, False, 0, 1.5, {}, [1], ["a", None]],
    "labels": ["good", 1, True, {}, {"good": 1}],
    "counts": ["3", 3, True, False],
    "annotators": ["w", 1, True, {}],
}
BAD_COUNTS = [-1, 1.5, "1", None, True, [], 10**12, 1e300]
BAD_ANNOTATOR_IDS = [True, 1.5, "", None, [], {}]
BLANK_LINE = st.sampled_from(["", " ", "\t", "\x0c", "\u3000", "\x85"])


@st.composite
def jsonl_case(draw, fault: str | None = None):
    fault = fault or draw(st.sampled_from(JSONL_FAULTS))
    n = draw(st.integers(2 if fault == "duplicate id" else 1, 5))
    huge_at = huge_item(draw, n)
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    ensure_ascii = draw(st.booleans())
    doc = Doc([], bom=draw(st.booleans()))
    j = draw(st.integers(0, n - 1))  # the item the fault goes into
    modes = {"bad counts": JSONL_MODES[2:], "bad annotators": JSONL_MODES[:2]}.get(fault)
    records, items = [], []
    for k in range(n):
        for blank in draw(st.lists(BLANK_LINE, max_size=2)):
            doc.chunks.append(blank + nl)
        mode = draw(st.sampled_from(modes)) if modes and k == j else None
        if fault.startswith("unusable") and k == j:
            mode = "unusable"
        rec, item = draw(jsonl_record(k, k == huge_at, mode))
        item.chunk = len(doc.chunks)
        doc.chunks.append(json.dumps(rec, ensure_ascii=ensure_ascii) + nl)
        records.append(rec)
        items.append(item)
    if draw(st.booleans()):
        doc.chunks[-1] = doc.chunks[-1][: -len(nl)]
    name = draw(st.sampled_from(["fuzz.jsonl", "fuzz.ndjson", "fuzz.json", "Fuzz Data.JSONL"]))
    kwargs, files = label_space_delivery(draw, name)
    strict = fault.endswith("strict") or (
        not fault.startswith("unusable") and draw(st.integers(0, 2)) == 2
    )
    base = ("jsonl", name, doc, items, kwargs, strict, files)
    rec, item = records[j], items[j]

    def put(body: str) -> None:
        tail = nl if doc.chunks[item.chunk].endswith("\n") else ""
        doc.chunks[item.chunk] = body + tail

    def dump(value) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii)

    if fault == "none" or fault.startswith("unusable"):
        return finish(*base)
    if fault in BYTE_FAULTS:
        return finish(*base, fault=fault, **byte_fault(draw, doc, fault))
    if fault == "truncated line":
        body = dump(rec)
        put(body[: draw(st.integers(1, len(body) - 1))])
        return finish(*base, fault=fault, chunk=item.chunk, kinds=("bad JSON",))
    if fault in ("random line", "nested too deep"):
        c = draw(st.integers(0, len(doc.chunks)))
        if fault == "random line":
            garbage = garbage_line(draw)
        else:
            garbage = draw(st.sampled_from(["[", "{", '{"a":'])) * draw(
                st.sampled_from([1, 50, 3000, 100_000])
            )
        doc.insert(c, garbage + nl, items, nl)
        pieces = garbage.split("\n")
        first = next((p for p, piece in enumerate(pieces) if piece.strip()), None)
        if first is None:  # only blank lines: still a valid file
            return finish(*base)
        try:
            value = json.loads(pieces[first])
        except Exception:
            value = None
        exact = not isinstance(value, dict)
        return finish(
            *base, fault=fault, line=doc.line_of(c) + first, rank=(1, doc.line_of(c) + first, c), exact=exact,
            kinds=("bad JSON", "wrong type"),
        )  # fmt: skip
    new = dict(rec)
    labels_mode = "labels" in rec
    options = {
        "wrong type": ["id", "context", "response", "not an object"]
        + (["labels", "annotators"] if labels_mode else ["counts"]),
        "labels/counts conflict": ["both", "neither"]
        + ([] if labels_mode else ["annotators with counts"]),
        "bad counts": [
            "count value",
            "counts length"
            if "counts" in rec and isinstance(rec["counts"], list)
            else "counts twice",
        ],
        "bad annotators": ["annotator id", "annotators length"],
    }.get(fault)
    if options:
        what = draw(st.sampled_from(options))
        kinds: tuple[str, ...] = ("wrong type",)
        if what in WRONG:
            new[what] = draw(st.sampled_from(WRONG[what]))
        elif what == "response":
            new["response"] = draw(st.sampled_from([None, 1, True, [], {"a": "b"}]))
            if draw(st.booleans()):
                del new["response"]
            kinds = ("wrong type", "missing field")
        elif what == "not an object":
            new = draw(st.sampled_from([[1, 2], "s", 3, None, True, [rec]]))
        elif fault == "labels/counts conflict":
            if what == "both" and labels_mode:
                new["counts"] = [1, 0, 0]
            elif what == "both":
                new["labels"] = ["good"]
            elif what == "neither":
                new.pop("labels", None)
                new.pop("counts", None)
            else:
                new["annotators"] = ["w"]
            kinds = ("labels/counts conflict",)
        elif what in ("annotator id", "annotators length"):
            m = len(rec["labels"])
            ids: list = ["w"] * (m + 1)
            if what == "annotator id" and m:
                ids = ["w"] * m
                ids[draw(st.integers(0, m - 1))] = draw(st.sampled_from(BAD_ANNOTATOR_IDS))
            new["annotators"] = ids
            kinds = ("bad annotators",)
        else:
            kinds = ("bad count",)
            counts = rec["counts"]
            bad = draw(st.sampled_from(BAD_COUNTS))
            if what == "counts length":
                new["counts"] = [1] * draw(st.sampled_from([C - 1, C + 1]))
            elif what == "counts twice":
                i = draw(st.integers(0, C - 1))
                kept = {k: v for k, v in counts.items() if NATIVE_SPACE.index(k) != i}
                new["counts"] = {**kept, NATIVE_SPACE.names[i]: 1, str(i): 1}
            elif isinstance(counts, list):
                new["counts"] = list(counts)
                new["counts"][draw(st.integers(0, C - 1))] = bad
            else:
                key = draw(st.sampled_from(list(counts))) if counts else "good"
                new["counts"] = {**counts, key: bad}
        put(dump(new))
        return finish(*base, fault=f"{fault}: {what}", chunk=item.chunk, kinds=kinds)
    if fault == "unknown label":
        if "labels" in rec:
            labels = list(rec["labels"])
            pos = draw(st.integers(0, len(labels)))
            labels.insert(pos, draw(UNKNOWN_JSON))
            new["labels"] = labels
            if "annotators" in rec:
                new["annotators"] = [*rec["annotators"][:pos], "u", *rec["annotators"][pos:]]
        else:
            new["counts"] = {draw(UNKNOWN_STR): 1}
        put(dump(new))
        return finish(*base, fault=fault, chunk=item.chunk, kinds=("unknown label",))
    if fault == "duplicate id":
        i, j = sorted(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
        first, item = items[i], items[j]
        value = first.id if first.id is not None else f"{name}:{doc.line_of(first.chunk)}"
        if isinstance(records[i].get("id"), int) and draw(st.booleans()):
            value = int(value)  # the integer 1003 and the string "1003" are the same id
        put(dump({**records[j], "id": value}))
        return finish(*base, fault=fault, chunk=item.chunk, kinds=("duplicate id",))
    assert fault == "duplicate key"
    key = draw(st.sampled_from(list(rec)))
    put("{" + dump(key) + ": " + dump(draw(JSON_VALUE)) + ", " + dump(rec)[1:])
    return finish(*base, fault=fault, chunk=item.chunk, kinds=("bad JSON",))


CSV_FAULTS = (
    "none", "unusable item", "unusable item, strict", "wrong field count", "unknown label",
    "bad count", "class counted twice", "bad JSON list", "bad annotators", "bad header",
    "duplicate id", "oversized field", "unterminated quote", "random line", *BYTE_FAULTS,
)  # fmt: skip
ROW_FAULTS = (
    "wrong field count", "bad count", "bad JSON list", "bad annotators", "duplicate id",
    "oversized field", "unknown label", "bad one-hot", "unknown code", "unusable item",
    "unusable item, strict",
)  # fmt: skip
BAD_COUNT_CELLS = ["x", "-1", "1.5", "1e300", "nan", "inf", "-0.5", "0x10", "1,0", "²"]
BAD_JSON_LISTS = [
    "[good", "[1,", "[" * 3000, '["good"] x', "[null,]", "[" + "1" * 5000 + "]", "[1 2]", "['a']"
]  # fmt: skip


@st.composite
def native_csv_case(draw, fault: str | None = None):
    fault = fault or draw(st.sampled_from(CSV_FAULTS))
    modes = {
        "bad annotators": ["labels+annotators"],
        "bad count": ["counts"],
        "class counted twice": ["counts"],
        "bad JSON list": ["labels", "labels+annotators"],
    }.get(fault, ["labels", "labels+annotators", "counts"])
    mode = draw(st.sampled_from(modes))
    cols = ["response"] + [
        c for c in ("id", "context") if (fault, c) == ("duplicate id", "id") or draw(st.booleans())
    ]
    count_cols: dict[str, int] = {}
    if mode == "counts":
        for i in draw(st.lists(st.integers(0, C - 1), min_size=1, max_size=C, unique=True)):
            count_cols["count_" + draw(spelling(i))] = i
    else:
        cols += ["labels", "annotators"] if mode == "labels+annotators" else ["labels"]
    extras = draw(st.lists(EXTRA_COLUMN, max_size=2, unique_by=str.strip))
    header = list(draw(st.permutations(cols + list(count_cols) + extras)))
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    quote_all = draw(st.booleans())
    n = draw(st.integers(2 if fault == "duplicate id" else int(fault in ROW_FAULTS), 5))
    j = draw(st.integers(0, max(n - 1, 0)))  # the row the fault goes into
    huge_at = huge_item(draw, n)
    name = draw(st.sampled_from(["fuzz.csv", "Fuzz Data.CSV"]))
    rows: list[dict] = []
    items: list[Item] = []
    ann_ids: list[list] = []  # per row: the annotator ids written (JSON values), or None
    label_values: list[list] = []  # per row: the labels written (JSON values)
    for k in range(n):
        unusable = fault.startswith("unusable") and k == j
        cells: dict[str, str] = {}
        item_id = None
        if "id" in cols:
            form = draw(st.sampled_from(["empty", "blank", "text"]))
            cells["id"] = {"empty": "", "blank": " "}.get(form) or (
                draw(PAD) + draw(st.text(max_size=5)) + f"#{k}" + draw(PAD)
            )
            item_id = cells["id"].strip() or None
        context: list[str] = []
        if "context" in cols:
            form = draw(st.sampled_from(["empty", "json", "joined"]))
            if form == "json":
                context = draw(st.lists(st.text(max_size=8), max_size=3))
                cells["context"] = json.dumps(context, ensure_ascii=draw(st.booleans()))
            elif form == "joined":
                turn = st.text(st.characters(exclude_characters="|["), min_size=1, max_size=8)
                context = draw(st.lists(turn.filter(str.strip), min_size=1, max_size=3))
                cells["context"] = " ||| ".join(context)
            else:
                cells["context"] = ""
        response = cells["response"] = text_for(draw, k == huge_at)
        annotations = None
        values: list = []
        ids = None
        if mode == "counts":
            counts = [0] * C
            for column, i in count_cols.items():
                counts[i] = 0 if unusable else draw(st.integers(0, 4))
                written = [str(counts[i]), f" {counts[i]} ", f"{counts[i]}.0"]
                cells[column] = draw(st.sampled_from(written + ([""] if counts[i] == 0 else [])))
            counts = tuple(counts)
        else:
            in_json = draw(st.booleans())
            labels = draw(
                st.lists(missing_label(in_json), max_size=3) if unusable else label_list(in_json)
            )
            values = [v for _, v in labels]
            cells["labels"] = json.dumps(values) if in_json else "|".join(values)
            if not cells["labels"].strip():  # an empty cell: no labels at all
                labels, values = [], []
            counts = counts_tuple(i for i, _ in labels if i is not None)
            if mode == "labels+annotators":
                form = draw(st.sampled_from(["empty", "pipe", "json"])) if labels else "empty"
                if form == "pipe":
                    written = draw(
                        st.lists(ANNOTATOR_CELL, min_size=len(labels), max_size=len(labels))
                    )
                    cells["annotators"] = "|".join(written)
                    ids = [w.strip() for w in written]
                elif form == "json":
                    ids = draw(st.lists(ANNOTATOR_JSON, min_size=len(labels), max_size=len(labels)))
                    cells["annotators"] = json.dumps(ids)
                else:
                    cells["annotators"] = ""
                if ids is not None:
                    annotations = [(str(a), i) for a, (i, _) in zip(ids, labels) if i is not None]
        meta = {}
        for column in extras:
            cells[column] = draw(TEXT)
            meta[column.strip()] = cells[column]
        usable = sum(counts) > 0
        rows.append(cells)
        ann_ids.append(ids)
        label_values.append(values)
        items.append(
            Item(
                chunk=-1,
                id=item_id,
                counts=counts if usable else None,
                annotations=annotations,
                response=response,
                context=context,
                meta=meta,
            )
        )

    doc = Doc([], bom=draw(st.booleans()))

    def layout() -> int:
        return lay_out_csv(draw, doc, header, rows, items, nl, quote_all, max_leading_blanks=2)

    header_chunk = layout()
    if draw(st.booleans()):
        doc.chunks[-1] = doc.chunks[-1][: -len(nl)]
    kwargs, files = label_space_delivery(draw, name)
    strict = fault.endswith("strict") or (
        not fault.startswith("unusable") and draw(st.integers(0, 2)) == 2
    )
    base = ("csv", name, doc, items, kwargs, strict, files)

    def rewrite(k: int, cells: list[str]) -> int:
        tail = nl if doc.chunks[items[k].chunk].endswith("\n") else ""
        doc.chunks[items[k].chunk] = csv_row(cells, "", quote_all) + tail
        return items[k].chunk

    def row_cells(k: int) -> list[str]:
        return [rows[k].get(h, "") for h in header]

    if fault == "none" or fault.startswith("unusable"):
        return finish(*base)
    if fault in BYTE_FAULTS:
        return finish(*base, fault=fault, **byte_fault(draw, doc, fault))
    if fault == "wrong field count":
        cells = row_cells(j)
        if draw(st.booleans()):
            cells.insert(draw(st.integers(0, len(cells))), draw(TEXT))
        else:
            cells.pop(draw(st.integers(0, len(cells) - 1)))
        chunk = rewrite(j, cells)
        return finish(*base, fault=fault, chunk=chunk, kinds=("wrong field count",))
    if fault == "unknown label" and mode != "counts":
        values = list(label_values[j])
        pos = draw(st.integers(0, len(values)))
        values.insert(pos, draw(UNKNOWN_JSON))
        rows[j]["labels"] = json.dumps(values)
        if ann_ids[j] is not None:
            rows[j]["annotators"] = json.dumps([*ann_ids[j][:pos], "u", *ann_ids[j][pos:]])
        chunk = rewrite(j, row_cells(j))
        return finish(*base, fault=fault, chunk=chunk, kinds=("unknown label",))
    if fault == "bad count":
        rows[j][draw(st.sampled_from(list(count_cols)))] = draw(st.sampled_from(BAD_COUNT_CELLS))
        chunk = rewrite(j, row_cells(j))
        return finish(*base, fault=fault, chunk=chunk, kinds=("bad count",))
    if fault == "bad JSON list":
        where = "annotators" if ann_ids[j] is not None and draw(st.booleans()) else "labels"
        rows[j][where] = draw(st.sampled_from(BAD_JSON_LISTS))
        chunk = rewrite(j, row_cells(j))
        return finish(*base, fault=fault, chunk=chunk, kinds=("bad JSON",))
    if fault == "bad annotators":
        m = len(label_values[j])
        ids = ["w"] * (m + 1)
        if m and draw(st.booleans()):
            ids = ["w"] * m
            ids[draw(st.integers(0, m - 1))] = draw(st.sampled_from(BAD_ANNOTATOR_IDS))
        rows[j]["annotators"] = json.dumps(ids)
        chunk = rewrite(j, row_cells(j))
        return finish(*base, fault=fault, chunk=chunk, kinds=("bad annotators",))
    if fault == "duplicate id":
        i, j = sorted(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
        first = items[i]
        value = first.id if first.id is not None else f"{name}:{doc.line_of(first.chunk)}"
        rows[j]["id"] = draw(PAD) + value + draw(PAD)
        chunk = rewrite(j, row_cells(j))
        return finish(*base, fault=fault, chunk=chunk, kinds=("duplicate id",))
    if fault == "oversized field":
        rows[j]["response"] = items[j].response = OVERSIZED
        rewrite(j, row_cells(j))
        return finish(*base)
    if fault == "unterminated quote":
        chunk = items[j].chunk if n else header_chunk
        doc.chunks[chunk] = '"' + doc.chunks[chunk]
        return finish(*base, fault=fault, chunk=chunk, exact=False)
    if fault == "random line":
        c = draw(st.integers(0, len(doc.chunks)))
        doc.insert(c, garbage_line(draw) + nl, items, nl)
        return finish(*base, fault=fault, chunk=c, exact=False)
    # a broken header (or, with counts, a count column for an unknown class)
    options = ["drop response", "repeat a column"]
    if mode == "counts":
        options += ["add labels", "drop counts", "add annotators", "count a class twice"]
    else:
        options += ["add a count column", "drop labels"]
    what = {"unknown label": "unknown count class", "class counted twice": "count a class twice"}
    what = what.get(fault) or draw(st.sampled_from(options))
    kinds = ("labels/counts conflict",)
    if what == "drop response":
        header.remove("response")
        kinds = ("missing column",)
    elif what == "repeat a column":
        column = draw(st.sampled_from(header))
        header.insert(draw(st.integers(0, len(header))), column)
        kinds = ("repeated column",)
    elif what == "add labels":
        header.insert(draw(st.integers(0, len(header))), "labels")
    elif what == "drop counts":
        header = [h for h in header if h not in count_cols]
    elif what == "add annotators":
        header.insert(draw(st.integers(0, len(header))), "annotators")
    elif what == "add a count column":
        header.insert(draw(st.integers(0, len(header))), "count_good")
    elif what == "drop labels":
        header = [h for h in header if h not in ("labels", "annotators")]
    else:
        if what == "count a class twice":
            column, i = draw(st.sampled_from(sorted(count_cols.items())))
            others = [s for s in _SPELLINGS[i] if s != column[len("count_") :].strip()]
            extra = "count_" + draw(st.sampled_from(others))
            kinds = ("repeated column",)
        else:
            extra = "count_" + draw(UNKNOWN_STR.filter(lambda u: "\n" not in u))
            kinds = ("unknown label",)
        header.insert(draw(st.integers(0, len(header))), extra)
    header_chunk = layout()
    return finish(*base, fault=f"bad header: {what}", chunk=header_chunk, kinds=kinds)


# --- LeWiDi ----------------------------------------------------------------------------------

LEWIDI = ("MD-Agreement", "HS-Brexit", "ArMIS", "ConvAbuse")
LEWIDI_FAULTS = (
    "none", "unusable item", "unusable item, strict", "not an object", "missing field", "wrong field type", "unknown label",
    "count mismatch", "empty entry", "duplicate id", "duplicate field", "bad conversation",
    "stray character", "trailing garbage", "top level not an object", *BYTE_FAULTS,
)  # fmt: skip
META_FIELDS = ("hard_label", "soft_label", "split", "lang", "other_info")
NO_COMMA = st.characters(exclude_characters=",")
BAD_CONVERSATIONS = [
    "not json", "", "[1]", '{"user": "x"}',
    '{"prev_agent": 1, "prev_user": "", "agent": "", "user": ""}',
    '{"prev_agent": "", "prev_agent": "", "prev_user": "", "agent": "", "user": ""}',
    "[" * 5000, '{"user": ' + "1" * 5000 + "}",
]  # fmt: skip


def lewidi_known(v: str, space: LabelSpace | None) -> bool:
    t = v.strip()
    if space is None:  # ConvAbuse severities, read with int()
        try:
            return int(t) in SEVERITIES
        except ValueError:
            return False
    words = {*space.names, *(a for a, _ in space.aliases)}
    return t in words or (re.fullmatch(r"-?[0-9]+", t) is not None and 0 <= int(t) < 2)


@st.composite
def lewidi_case(draw, fault: str | None = None):
    fault = fault or draw(st.sampled_from(LEWIDI_FAULTS))
    dataset = "ConvAbuse" if fault == "bad conversation" else draw(st.sampled_from(LEWIDI))
    kwargs: dict = {}
    if draw(st.booleans()):
        name = f"{dataset}_{draw(st.sampled_from(['train', 'dev', 'test']))}.json"
    else:
        name = "fuzz.json"
        kwargs["dataset"] = dataset
    scheme = None
    if dataset == "ConvAbuse":
        scheme = draw(st.sampled_from(["binary", "severity"]))
        if scheme == "severity" or draw(st.booleans()):
            kwargs["label_scheme"] = scheme
        space = convabuse_label_space(scheme)
    else:
        space = LEWIDI_LABEL_SPACES[dataset]
    nl = draw(st.sampled_from(["\n", "\r\n", ""]))
    indent = draw(st.sampled_from([None, 1, 4]))
    ensure_ascii = draw(st.booleans())
    whole_file = (*BYTE_FAULTS, "none", "trailing garbage", "top level not an object")
    n = draw(st.integers(2 if fault == "duplicate id" else int(fault not in whole_file), 4))
    j = draw(st.integers(0, max(n - 1, 0)))  # the item the fault goes into
    huge_at = huge_item(draw, n)

    def label(i_or_s):
        """(class, written label) for a binary class index or a ConvAbuse severity."""
        if scheme is None:
            words = [space.names[i_or_s], str(i_or_s), "0" + str(i_or_s)]
            written = draw(PAD) + draw(st.sampled_from(words)) + draw(PAD)
            return i_or_s, written
        cls = SEVERITIES.index(i_or_s) if scheme == "severity" else int(i_or_s < 0)
        return cls, draw(PAD) + str(i_or_s) + draw(PAD)

    keys, values, items, raw = [], [], [], []
    for k in range(n):
        key = draw(st.text(max_size=6)) + f"#{k}"
        m = draw(st.integers(1, 5)) if draw(st.integers(0, 7)) < 7 else 0
        if fault.startswith("unusable") and k == j:
            m = 0
        ids = draw(
            st.lists(st.text(NO_COMMA, max_size=5).filter(str.strip), min_size=m, max_size=m)
        )
        pool = st.integers(0, 1) if scheme is None else st.sampled_from(SEVERITIES)
        labels = [label(draw(pool)) for _ in range(m)]
        sep = draw(st.sampled_from([",", ", "]))
        value: dict = {
            "annotators": sep.join(ids) if m else draw(st.sampled_from(["", " "])),
            "annotations": sep.join(w for _, w in labels) if m else "",
        }
        if scheme is None:
            response = value["text"] = text_for(draw, k == huge_at)
            context: list[str] = []
        else:
            turns = {t: draw(TEXT) for t in ("prev_agent", "prev_user", "agent")}
            turns["user"] = response = text_for(draw, k == huge_at)
            if draw(st.booleans()):
                turns["extra"] = draw(JSON_VALUE)
            turns = {t: turns[t] for t in draw(st.permutations(list(turns)))}
            value["text"] = json.dumps(turns, ensure_ascii=draw(st.booleans()))
            context = [turns[t] for t in ("prev_agent", "prev_user", "agent") if turns[t].strip()]
        meta = {"dataset": dataset}
        for f in draw(st.lists(st.sampled_from(META_FIELDS), unique=True, max_size=3)):
            value[f] = meta[f] = draw(JSON_VALUE)
        if draw(st.booleans()):
            value["other"] = draw(JSON_VALUE)
        value = {f: value[f] for f in draw(st.permutations(list(value)))}
        tally = collections.Counter(c for c, _ in labels)
        counts = tuple(tally[c] for c in range(space.num_classes))
        annotations = [(a.strip(), c) for a, (c, _) in zip(ids, labels)]
        items.append(
            Item(
                chunk=k + 1,
                id=key,
                counts=counts if m else None,
                annotations=annotations,
                response=response,
                context=context,
                meta=meta,
            )
        )
        keys.append(key)
        values.append(value)
        raw.append({"ids": ids, "labels": [w for _, w in labels]})

    lead = draw(st.sampled_from(["", " ", "\n", "\r\n  "]))

    def dump(v) -> str:
        return json.dumps(v, indent=indent, ensure_ascii=ensure_ascii)

    def member(k: int, prefix: str = "", inside: str = "", body: str | None = None) -> str:
        body = dump(values[k]) if body is None else body
        if inside:
            body = body[0] + inside + body[1:]
        comma = "," if k < n - 1 else ""
        return f"  {prefix}{dump(keys[k])}: {body}{comma}{nl}"

    doc = Doc([lead + "{" + nl] + [member(k) for k in range(n)] + ["}" + nl])
    doc.bom = draw(st.booleans())
    strict = fault.endswith("strict") or (
        not fault.startswith("unusable") and draw(st.integers(0, 2)) == 2
    )
    base = ("lewidi", name, doc, items, kwargs, strict, {})
    if fault == "none" or fault.startswith("unusable"):
        return finish(*base)
    if fault in BYTE_FAULTS:
        return finish(*base, fault=fault, **byte_fault(draw, doc, fault, json_text=True))
    if fault == "trailing garbage":
        garbage = draw(st.text(min_size=1, max_size=20))
        text = doc.text()
        doc.chunks.append(garbage)
        at = next((p for p, c in enumerate(garbage) if c not in " \t\n\r"), None)
        if at is None:
            return finish(*base)
        line = (text + garbage[:at]).count("\n") + 1
        return finish(*base, fault=fault, line=line, kinds=("bad JSON",))
    if fault == "top level not an object":
        if draw(st.booleans()):
            doc.chunks[0] = lead + "[" + nl
            line = lead.count("\n") + 1
        else:
            doc.chunks = [lead]
            line = 1
        # the loader stops at the top level, before any item (or any strict skip) is reached
        base = ("lewidi", name, doc, [], kwargs, strict, {})
        return finish(*base, fault=fault, line=line, kinds=("wrong type",))
    kinds: tuple[str, ...]
    if fault == "not an object":
        values[j] = draw(st.sampled_from([[], "x", 1, None, True, [{"text": "a"}]]))
        kinds = ("wrong type",)
    elif fault == "missing field":
        del values[j][draw(st.sampled_from(["text", "annotators", "annotations"]))]
        kinds = ("missing field",)
    elif fault == "wrong field type":
        f = draw(st.sampled_from(["text", "annotators", "annotations"]))
        values[j][f] = draw(st.sampled_from([1, None, [], {}, True, ["a"], 1.5]))
        kinds = ("wrong type",)
    elif fault in ("unknown label", "count mismatch", "empty entry"):
        ids, labels = list(raw[j]["ids"]), list(raw[j]["labels"])
        pos = draw(st.integers(0, len(ids)))
        if fault == "unknown label":
            known_in = space if scheme is None else None
            unknown = st.one_of(
                st.sampled_from(["2", "x", "-4", "²", "--1"]), st.text(NO_COMMA, max_size=6)
            ).filter(lambda v: v.strip() and not lewidi_known(v, known_in))
            ids.insert(pos, "u")
            labels.insert(pos, draw(unknown))
            kinds = ("unknown label",)
        elif fault == "count mismatch":
            ids.insert(pos, "extra")
            kinds = ("bad annotators",)
        else:
            ids.insert(pos, "")
            labels.insert(pos, "")
            if len(ids) == 1:
                ids.append("a")
                labels.append("0")
            kinds = ("bad annotators",)
        values[j]["annotators"] = ",".join(ids)
        values[j]["annotations"] = ",".join(labels)
    elif fault == "duplicate id":
        i, j = sorted(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
        keys[j] = keys[i]
        kinds = ("duplicate id",)
    elif fault == "bad conversation":
        values[j]["text"] = draw(st.sampled_from(BAD_CONVERSATIONS))
        kinds = ("bad JSON", "wrong type")
    elif fault == "duplicate field":
        f = draw(st.sampled_from(list(values[j])))
        body = dump(values[j])
        doc.chunks[j + 1] = member(
            j, body="{" + dump(f) + ": " + dump(draw(JSON_VALUE)) + ", " + body[1:]
        )
        return finish(*base, fault=fault, chunk=j + 1, kinds=("bad JSON",))
    else:
        assert fault == "stray character"
        if draw(st.booleans()):
            doc.chunks[j + 1] = member(j, prefix=draw(st.sampled_from(list("@#':,}]"))))
        else:
            doc.chunks[j + 1] = member(j, inside=draw(st.sampled_from(list("@#':,]"))))
        return finish(*base, fault=fault, chunk=j + 1, kinds=("bad JSON",))
    doc.chunks[j + 1] = member(j)
    return finish(*base, fault=fault, chunk=j + 1, kinds=kinds)


# --- ConvAbuse -------------------------------------------------------------------------------

CONVABUSE_REQUIRED = ["example_id", "prev_agent", "prev_user", "agent", "user"]
CONVABUSE_FAULTS = (
    "none", "unusable item", "unusable item, strict", "bad one-hot", "wrong field count", "duplicate id", "bad header",
    "oversized field", "unterminated quote", "random line", *BYTE_FAULTS,
)  # fmt: skip
CONVABUSE_ROW_FAULTS = ("bad one-hot", "wrong field count", "duplicate id", "oversized field",
                        "unusable item", "unusable item, strict")  # fmt: skip
CONVABUSE_EXTRAS = st.one_of(
    *[
        st.sampled_from(
            ["Annotator6_transphobic", "Annotator1_racist", "notes", "", "Annotator²_is_abuse.1"]
        )
    ]
    * 2,
    st.text(max_size=6),
).filter(
    lambda h: (
        h.strip() not in (*CONVABUSE_REQUIRED, "conv_id", "bot")
        and not re.fullmatch(r"Annotator[0-9]+_is_abuse\..+", h.strip(), re.S)
    )
)


@st.composite
def convabuse_case(draw, fault: str | None = None):
    fault = fault or draw(st.sampled_from(CONVABUSE_FAULTS))
    annotators = sorted(draw(st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True)))
    scheme = draw(st.sampled_from(["severity", "binary"]))
    repeats = draw(st.sampled_from(["first", "all"]))
    kwargs = {}
    if scheme == "binary" or draw(st.booleans()):
        kwargs["label_scheme"] = scheme
    if repeats == "all" or draw(st.booleans()):
        kwargs["repeats"] = repeats
    optional = [c for c in ("conv_id", "bot") if draw(st.booleans())]
    groups = {k: [f"Annotator{k}_is_abuse.{s}" for s in SEVERITIES] for k in annotators}
    extras = draw(st.lists(CONVABUSE_EXTRAS, max_size=3))  # repeats allowed, as in the real files
    header = list(
        draw(st.permutations(CONVABUSE_REQUIRED + optional + sum(groups.values(), []) + extras))
    )
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    quote_all = draw(st.booleans())
    n = draw(st.integers(2 if fault == "duplicate id" else int(fault in CONVABUSE_ROW_FAULTS), 5))
    j = draw(st.integers(0, max(n - 1, 0)))  # the row the fault goes into
    huge_at = huge_item(draw, n)
    num_classes = 5 if scheme == "severity" else 2

    def cls(s: int) -> int:
        return SEVERITIES.index(s) if scheme == "severity" else int(s < 0)

    def one_hot(sevs: list[int]) -> list[str]:
        sep = draw(st.sampled_from([",", ", "]))
        pad = draw(PAD)
        return [pad + sep.join("1" if v == s else "0" for v in sevs) for s in SEVERITIES]

    rows, items, present = [], [], []
    for k in range(n):
        cells: dict[str, str] = {}
        cells["example_id"] = draw(st.sampled_from([f"{k}.0", f" {k}.0 "]))
        if draw(st.booleans()):
            cells["example_id"] = draw(PAD) + draw(st.text(max_size=5)) + f"#{k}" + draw(PAD)
        turns = [draw(TEXT) for _ in range(3)]
        for c, t in zip(("prev_agent", "prev_user", "agent"), turns):
            cells[c] = t
        cells["user"] = text_for(draw, k == huge_at)
        meta = {}
        for c in optional:
            cells[c] = meta[c] = draw(TEXT)
        annotations = []
        who = []
        for a in annotators:
            state = draw(st.sampled_from(["one", "absent", "one", "repeats"]))
            if fault.startswith("unusable") and k == j:
                state = "absent"
            if state == "absent":
                for c in groups[a]:
                    cells[c] = draw(st.sampled_from(["", " "]))
                continue
            who.append(a)
            sevs = draw(
                st.lists(
                    st.sampled_from(SEVERITIES), min_size=1, max_size=1 if state == "one" else 3
                )
            )
            cells.update(zip(groups[a], one_hot(sevs)))
            annotations += [(f"Ann{a}", cls(s)) for s in (sevs if repeats == "all" else sevs[:1])]
        for c in extras:
            cells[c] = draw(TEXT)
        tally = collections.Counter(c for _, c in annotations)
        counts = tuple(tally[c] for c in range(num_classes))
        rows.append(cells)
        present.append(who)
        items.append(
            Item(
                chunk=-1,
                id=cells["example_id"].strip(),
                counts=counts if annotations else None,
                annotations=annotations,
                response=cells["user"],
                context=[t for t in turns if t.strip()],
                meta=meta,
            )
        )
    doc = Doc([], bom=draw(st.booleans()))

    def layout() -> int:
        return lay_out_csv(draw, doc, header, rows, items, nl, quote_all, max_leading_blanks=1)

    header_chunk = layout()
    strict = fault.endswith("strict") or (
        not fault.startswith("unusable") and draw(st.integers(0, 2)) == 2
    )
    base = ("convabuse", "ConvAbuseEMNLPfuzz.csv", doc, items, kwargs, strict, {})

    def rewrite(k: int) -> int:
        doc.chunks[items[k].chunk] = csv_row([rows[k].get(h, "") for h in header], nl, quote_all)
        return items[k].chunk

    if fault == "none" or fault.startswith("unusable"):
        return finish(*base)
    if fault in BYTE_FAULTS:
        return finish(*base, fault=fault, **byte_fault(draw, doc, fault))
    if fault == "bad one-hot":
        a = draw(st.sampled_from(annotators))
        cells = rows[j]
        if a not in present[j]:
            cells.update(zip(groups[a], one_hot([draw(st.sampled_from(SEVERITIES))])))
        what = draw(
            st.sampled_from(["partly empty", "not 0/1", "no 1", "two 1s", "repeat mismatch"])
        )
        s = draw(st.integers(0, 4))
        if what == "partly empty":
            cells[groups[a][s]] = ""
        elif what == "not 0/1":
            cells[groups[a][s]] = draw(st.sampled_from(["2", "x", "1.0", "-1", "yes", "１", "01"]))
        elif what == "no 1":
            cells.update((c, "0") for c in groups[a])
        elif what == "two 1s":
            cells.update(
                (c, "1" if t in (s, (s + 1) % 5) else "0") for t, c in enumerate(groups[a])
            )
        else:
            cells[groups[a][s]] += ", 0"
        return finish(
            *base, fault=f"{fault}: {what}", chunk=rewrite(j), kinds=("bad one-hot group",)
        )
    if fault == "wrong field count":
        cells = [rows[j].get(h, "") for h in header]
        if draw(st.booleans()):
            cells.append(draw(TEXT))
        else:
            cells.pop(draw(st.integers(0, len(cells) - 1)))
        doc.chunks[items[j].chunk] = csv_row(cells, nl, quote_all)
        return finish(*base, fault=fault, chunk=items[j].chunk, kinds=("wrong field count",))
    if fault == "duplicate id":
        i, j = sorted(draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True)))
        rows[j]["example_id"] = draw(PAD) + rows[i]["example_id"].strip() + draw(PAD)
        return finish(*base, fault=fault, chunk=rewrite(j), kinds=("duplicate id",))
    if fault == "oversized field":
        rows[j][draw(st.sampled_from(["user", "prev_agent"]))] = OVERSIZED
        turns = [rows[j][c] for c in ("prev_agent", "prev_user", "agent")]
        items[j].response, items[j].context = rows[j]["user"], [t for t in turns if t.strip()]
        rewrite(j)
        return finish(*base)
    if fault == "unterminated quote":
        chunk = items[j].chunk if n else header_chunk
        doc.chunks[chunk] = '"' + doc.chunks[chunk]
        return finish(*base, fault=fault, chunk=chunk, exact=False)
    if fault == "random line":
        c = draw(st.integers(0, len(doc.chunks)))
        doc.insert(c, garbage_line(draw) + nl, items, nl)
        return finish(*base, fault=fault, chunk=c, exact=False)
    assert fault == "bad header"
    what = draw(
        st.sampled_from(["drop a column", "drop a severity", "drop all severities", "repeat"])
    )
    kinds = ("missing column",)
    if what == "drop a column":
        header.remove(draw(st.sampled_from(CONVABUSE_REQUIRED)))
    elif what == "drop a severity":
        header.remove(draw(st.sampled_from(sum(groups.values(), []))))
    elif what == "drop all severities":
        header = [h for h in header if h not in sum(groups.values(), [])]
    else:
        used = CONVABUSE_REQUIRED + optional + sum(groups.values(), [])
        header.insert(draw(st.integers(0, len(header))), draw(st.sampled_from(used)))
        kinds = ("repeated column",)
    return finish(*base, fault=f"{fault}: {what}", chunk=layout(), kinds=kinds)


# --- MI --------------------------------------------------------------------------------------

MI_COLUMNS = {
    "dialog_id": ["dialog_id", "Dialog_ID", " dialog_id "],
    "turn": ["turn", "Turn", "TURN "],
    "author": ["author", "Author"],
    "text": ["text", "Text"],
    "ann1": ["ann1", "ANN1", " Ann1"],
    "ann2": ["ann2", "Ann2 "],
    "judge 1 annotation": ["judge 1 annotation", "Judge 1 Annotation", "judge  1\tannotation"],
    "judge 2 annotation": ["judge 2 annotation", "JUDGE 2 ANNOTATION "],
}
MI_ANNOTATORS = {"ann1": "ann1", "ann2": "ann2", "judge 1 annotation": "judge1",
                 "judge 2 annotation": "judge2"}  # fmt: skip
MI_FAULTS = (
    "none", "unusable item", "unusable item, strict", "unknown code", "unknown author", "wrong field count", "duplicate id",
    "bad header", "oversized field", "unterminated quote", "random line", *BYTE_FAULTS,
)  # fmt: skip


def mi_norm(text: str) -> str:
    return " ".join(text.split()).lower()


_MI_CODES = {mi_norm(code): MI_LABEL_SPACE.names.index(c) for code, c in MI_CODES.items()}
MI_EXTRA = st.text(max_size=6).filter(lambda h: mi_norm(h) not in MI_COLUMNS)
UNKNOWN_MI = st.one_of(st.sampled_from(["Reflection", "Affirmation", "0", "x"]), TEXT).filter(
    lambda v: mi_norm(v) not in _MI_CODES and v.strip() not in ("", "-")
)


def mi_code(draw) -> tuple[int | None, str]:
    if draw(st.integers(0, 2)) == 0:
        return None, draw(st.sampled_from(["-", "", " - ", " "]))
    code = draw(st.sampled_from(list(MI_CODES)))
    written = draw(st.sampled_from([code, code.upper(), code.lower(), code.replace(" ", "  ")]))
    return _MI_CODES[mi_norm(code)], draw(PAD) + written + draw(PAD)


def mi_oracle(rows: list[dict], items: list[Item], context_turns) -> None:
    """Fill in the ranks, ids and contexts of the listener items, in the loader's order:
    dialogs by first appearance, turns by number within a dialog when all are numbers."""
    dialogs: dict[str, list[dict]] = {}
    for row in rows:
        dialogs.setdefault(row["dialog"].strip(), []).append(row)
    position = 0
    for dialog, members in dialogs.items():
        try:
            keys = [float(r["turn"]) for r in members]
            members = [r for _, r in sorted(zip(keys, members), key=lambda kr: kr[0])]
        except ValueError:
            pass
        speakers: list[str] = []
        for row in members:
            position += 1
            row["rank"] = (1, position)
            if row["item"] is None:
                speakers.append(row["text"])
                continue
            item = row["item"]
            item.rank = (1, position)
            item.id = f"{dialog}:{row['turn'].strip()}"
            if context_turns is None:
                item.context = list(speakers)
            else:
                item.context = (
                    speakers[max(0, len(speakers) - context_turns) :] if context_turns else []
                )
            item.meta["dialog_id"] = dialog
            item.meta["turn"] = row["turn"].strip()


@st.composite
def mi_case(draw, fault: str | None = None):
    fault = fault or draw(st.sampled_from(MI_FAULTS))
    extras = draw(st.lists(MI_EXTRA, max_size=2, unique_by=mi_norm))
    names = {c: draw(st.sampled_from(v)) for c, v in MI_COLUMNS.items()}
    header = list(draw(st.permutations([*names.values(), *extras])))
    kwargs = {}
    context_turns = 1
    if draw(st.booleans()):
        context_turns = kwargs["context_turns"] = draw(st.sampled_from([None, 0, 1, 2, 3, 5, 9]))
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    quote_all = draw(st.booleans())
    rows: list[dict] = []
    for d in range(draw(st.integers(1, 3))):
        numeric = draw(st.integers(0, 3)) > 0
        for t in range(draw(st.integers(2 if fault == "duplicate id" and d == 0 else 1, 8))):
            author = draw(st.sampled_from(["speaker", "listener"]))
            turn = str(t + 1) if numeric else f"t{t + 1}"
            rows.append(
                {
                    "dialog": draw(st.sampled_from([f"d{d}", f" d{d} "])),
                    "turn": draw(st.sampled_from([turn, f" {turn}", f"{turn} "])),
                    "author": draw(
                        st.sampled_from([author, author.title(), f" {author.upper()} "])
                    ),
                    "listener": author == "listener",
                }
            )
    rows = [rows[k] for k in draw(st.permutations(range(len(rows))))]
    need = {"unknown code": 1, "duplicate id": 2, "unusable item": 1, "unusable item, strict": 1}
    for row in rows[: need.get(fault, 0)]:
        row["listener"], row["author"] = True, "listener"  # the fault needs listener turns
    huge_at = huge_item(draw, len(rows))
    items: list[Item] = []
    for k, row in enumerate(rows):
        row["text"] = text_for(draw, k == huge_at)
        cells = {
            names["dialog_id"]: row["dialog"],
            names["turn"]: row["turn"],
            names["author"]: row["author"],
            names["text"]: row["text"],
        }
        annotations = []
        for column, annotator in MI_ANNOTATORS.items():
            if row["listener"] and fault.startswith("unusable") and k == 0:
                c, cells[names[column]] = None, draw(st.sampled_from(["-", "", " - "]))
            elif row["listener"]:
                c, cells[names[column]] = mi_code(draw)
                if c is not None:
                    annotations.append((annotator, c))
            else:
                cells[names[column]] = draw(st.sampled_from(["-", "Affirm", ""]))
        meta = {}
        for h in extras:
            cells[h] = meta[h.strip()] = draw(TEXT)
        row["cells"] = cells
        row["item"] = None
        if row["listener"]:
            tally = collections.Counter(c for _, c in annotations)
            counts = tuple(tally[c] for c in range(3))
            row["item"] = Item(
                chunk=-1,
                id=None,
                counts=counts if annotations else None,
                annotations=annotations,
                response=row["text"],
                meta=meta,
                meta_exact=False,
            )
            items.append(row["item"])
    doc = Doc([], bom=draw(st.booleans()))

    def layout() -> int:
        doc.chunks = [nl] * draw(st.integers(0, 1))
        header_chunk = len(doc.chunks)
        doc.chunks.append(csv_row(header, nl, quote_all))
        for row in rows:
            doc.chunks += [nl] * draw(st.integers(0, 1))
            row["chunk"] = len(doc.chunks)
            if row["item"] is not None:
                row["item"].chunk = row["chunk"]
            doc.chunks.append(csv_row([row["cells"].get(h, "") for h in header], nl, quote_all))
        return header_chunk

    def rewrite(row: dict, cells: list[str] | None = None) -> int:
        cells = [row["cells"].get(h, "") for h in header] if cells is None else cells
        doc.chunks[row["chunk"]] = csv_row(cells, nl, quote_all)
        return row["chunk"]

    layout()
    strict = fault.endswith("strict") or (
        not fault.startswith("unusable") and draw(st.integers(0, 2)) == 2
    )
    base = ("mi", "MI Dataset.csv", doc, items, kwargs, strict, {})
    listeners = [r for r in rows if r["listener"]]
    row = draw(st.sampled_from(listeners if fault == "unknown code" else rows))
    kinds: tuple[str, ...]
    if fault == "duplicate id":
        first, row = draw(
            st.lists(st.sampled_from(listeners), min_size=2, max_size=2, unique_by=id)
        )
        if rows.index(first) > rows.index(row):
            first, row = row, first
        row["dialog"] = row["cells"][names["dialog_id"]] = first["dialog"]
        row["turn"] = row["cells"][names["turn"]] = first["turn"]
        chunk, kinds = rewrite(row), ("duplicate id",)
    elif fault == "unknown code":
        row["cells"][names[draw(st.sampled_from(list(MI_ANNOTATORS)))]] = draw(UNKNOWN_MI)
        chunk, kinds = rewrite(row), ("unknown label",)
    mi_oracle(rows, items, context_turns)
    if fault == "none" or fault.startswith("unusable"):
        return finish(*base)
    if fault in BYTE_FAULTS:
        return finish(*base, fault=fault, **byte_fault(draw, doc, fault))
    if fault in ("duplicate id", "unknown code"):
        return finish(*base, fault=fault, chunk=chunk, rank=row["rank"], kinds=kinds)
    if fault == "unknown author":
        unknown = TEXT.filter(lambda a: mi_norm(a) not in ("speaker", "listener"))
        row["cells"][names["author"]] = draw(unknown)
        chunk = rewrite(row)
        return finish(
            *base, fault=fault, chunk=chunk, rank=(0, doc.line_of(chunk)), kinds=("unknown author",)
        )
    if fault == "wrong field count":
        cells = [row["cells"].get(h, "") for h in header]
        if draw(st.booleans()):
            cells.append(draw(TEXT))
        else:
            cells.pop(draw(st.integers(0, len(cells) - 1)))
        chunk = rewrite(row, cells)
        return finish(
            *base,
            fault=fault,
            chunk=chunk,
            rank=(0, doc.line_of(chunk)),
            kinds=("wrong field count",),
        )
    if fault == "oversized field":
        row["cells"][names["text"]] = row["text"] = OVERSIZED
        if row["item"] is not None:
            row["item"].response = OVERSIZED
        mi_oracle(rows, items, context_turns)  # a speaker's turn is a later item's context
        rewrite(row)
        return finish(*base)
    if fault == "unterminated quote":
        doc.chunks[row["chunk"]] = '"' + doc.chunks[row["chunk"]]
        return finish(*base, fault=fault, chunk=row["chunk"], exact=False)
    if fault == "random line":
        c = draw(st.integers(0, len(doc.chunks)))
        doc.insert(c, garbage_line(draw) + nl, items, nl)
        return finish(*base, fault=fault, chunk=c, exact=False)
    assert fault == "bad header"
    column = draw(st.sampled_from(list(MI_COLUMNS)))
    if draw(st.booleans()):
        header.remove(names[column])
        kinds = ("missing column",)
    else:
        header.insert(draw(st.integers(0, len(header))), draw(st.sampled_from(MI_COLUMNS[column])))
        kinds = ("repeated column",)
    chunk = layout()
    return finish(*base, fault=fault, chunk=chunk, rank=(0, doc.line_of(chunk)), kinds=kinds)


# --- the tests -------------------------------------------------------------------------------


@FUZZ
@given(case=jsonl_case())
def test_fuzz_native_jsonl(case):
    check(case)


@FUZZ
@given(case=native_csv_case())
def test_fuzz_native_csv(case):
    check(case)


@FUZZ
@given(case=lewidi_case())
def test_fuzz_lewidi(case):
    check(case)


@FUZZ
@given(case=convabuse_case())
def test_fuzz_convabuse(case):
    check(case)


@FUZZ
@given(case=mi_case())
def test_fuzz_mi(case):
    check(case)


FAULTS = (
    (jsonl_case, JSONL_FAULTS),
    (native_csv_case, CSV_FAULTS),
    (lewidi_case, LEWIDI_FAULTS),
    (convabuse_case, CONVABUSE_FAULTS),
    (mi_case, MI_FAULTS),
)
EXPECTED_KINDS = (
    "bad JSON", "bad CSV", "not UTF-8", "unknown label", "unknown author", "duplicate id",
    "wrong field count", "missing column", "missing field", "repeated column",
    "labels/counts conflict", "bad count", "bad annotators", "bad one-hot group", "wrong type",
    "empty file", "no usable label (strict)", "no usable label (skipped)",
)  # fmt: skip
MIN_KINDS = len(EXPECTED_KINDS)


def test_fuzz_failure_kinds_reached():
    """Every fault of every format, SWEEP_EXAMPLES files each (derandomized, so the same files
    whatever ran before), checked like the fuzz tests; then the kinds of outcome they reached."""
    seen: collections.Counter = collections.Counter()
    for strategy, faults in FAULTS:
        for fault in dict.fromkeys(faults):

            @SWEEP
            @given(case=strategy(fault))
            def run(case):
                check(case, seen)

            run()
    kinds = sorted(seen)
    assert len(kinds) >= MIN_KINDS, kinds
    assert set(EXPECTED_KINDS) <= set(kinds), sorted(set(EXPECTED_KINDS) - set(kinds))
