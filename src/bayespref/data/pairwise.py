"""Pairwise preference data (METHOD section 9): a context, responses A and B, and votes.

An item's outcome classes are :data:`OUTCOMES` = (``A``, ``B``, ``tie``); ``counts`` (3,) are
the votes for each. Readers, one per schema, all JSON Lines (one object per line):

- ``native``: ``{"id"?, "context"?, "response_a", "response_b"}`` plus either ``"votes":
  {"A": n, "B": n, "tie": n}`` (missing keys count 0) or ``"annotations": [{"annotator": id,
  "label": "A" | "B" | "tie"}]``; optional ``"margin"`` (>= 0, for margin Bradley-Terry);
- ``trl``: TRL's ``prompt`` / ``chosen`` / ``rejected`` (strings, or lists of chat messages;
  without ``prompt`` the shared turns of ``chosen`` are the context): one vote for ``chosen``;
- ``multipref``: MultiPref rows (``text``, ``completion_a``, ``completion_b``,
  ``normal_worker_annotations`` / ``expert_worker_annotations`` with ``overall_pref`` in
  ``A-is-clearly-better`` .. ``B-is-clearly-better`` or ``Tie`` and ``evaluator``);
- ``helpsteer2``: HelpSteer2-Preference rows (``prompt``, ``response_1``, ``response_2``,
  ``preference_strength`` in -3..3, negative = response 1 better; the individual
  annotators' ``strength`` in ``all_preferences_unprocessed`` when present). ``margin`` is
  ``|preference_strength|``.

Rows from a Hugging Face dataset (or any iterable of dicts) go through :func:`pairs_from_records`
with the same schemas; :func:`load_pairwise_hf` (``format="hf"``) reads one with the
``datasets`` library. Errors follow the other loaders: one line, file and line number.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._common import JSON_ERRORS, json_problem, read_text, unique_keys
from .schema import DataError

logger = logging.getLogger(__name__)

OUTCOMES = ("A", "B", "tie")
FORMATS = ("native", "trl", "multipref", "helpsteer2")
"""The row schemas (one parser each)."""
HF_FORMAT = "hf"
"""A Hugging Face dataset whose rows are in one of :data:`FORMATS` (:func:`load_pairwise_hf`)."""
HF_OPTIONS = ("path", "split", "schema")
"""The keys of an ``hf`` split spec: ``{path, split, schema}``."""
HF_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
MAX_VOTES = 10**6
MULTIPREF_OUTCOME = {
    "A-is-clearly-better": 0,
    "A-is-slightly-better": 0,
    "B-is-clearly-better": 1,
    "B-is-slightly-better": 1,
    "Tie": 2,
}


@dataclasses.dataclass
class PairwiseExample:
    """One pair. ``counts`` (3,) votes for A, B, tie; ``annotations`` (annotator id, outcome
    index) when known; ``true_distribution`` (3,) the known P* on synthetic pairs."""

    id: str
    context: list[str]
    response_a: str
    response_b: str
    counts: np.ndarray
    annotations: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    margin: float | None = None
    true_distribution: np.ndarray | None = None

    @property
    def num_votes(self) -> int:
        return int(self.counts.sum())


@dataclasses.dataclass
class PairwiseDataset:
    examples: list[PairwiseExample]
    name: str = "pairs"

    def __len__(self) -> int:
        return len(self.examples)

    def counts(self) -> np.ndarray:
        """(N, 3) vote counts."""
        return np.stack([e.counts for e in self.examples]) if self.examples else np.zeros((0, 3))


NO_WINNER = -1
"""The winner of a pair whose votes for A and B are equal."""


def outcome_shares(counts: np.ndarray, ties: bool) -> np.ndarray:
    """Rows of votes (or probabilities) for A, B, tie (N, 3) as shares over a model's
    outcomes: (N, 3) with ties, else (N, 2) with each tie counted half for A, half for B."""
    counts = np.asarray(counts, dtype=np.float64)
    values = counts if ties else counts[:, :2] + counts[:, 2:3] / 2
    return values / values.sum(axis=1, keepdims=True)


def smoothed_outcome_prior(counts: np.ndarray, ties: bool, alpha: float) -> np.ndarray:
    """The training prior over a model's K outcomes (METHOD section 1 on the vote counts,
    ties split as in :func:`outcome_shares`): ``(c + alpha) / (n + K alpha)``."""
    counts = np.asarray(counts, dtype=np.float64)
    values = counts if ties else counts[:, :2] + counts[:, 2:3] / 2
    return (values + alpha) / (values.sum(axis=1, keepdims=True) + values.shape[1] * alpha)


def pair_winner(counts: np.ndarray) -> np.ndarray:
    """(N,) 0 where A has more votes than B, 1 where B has more, :data:`NO_WINNER` else."""
    counts = np.asarray(counts)
    return np.where(
        counts[:, 0] > counts[:, 1], 0, np.where(counts[:, 1] > counts[:, 0], 1, NO_WINNER)
    ).astype(np.int64)


def majority_outcome(counts: np.ndarray, ties: bool) -> np.ndarray:
    """(N,) the most voted outcome. With ties modelled a split top (several outcomes with the
    most votes) is a tie (2); without, the :func:`pair_winner` (:data:`NO_WINNER` on a
    split, which majority losses skip: a tie is not a win for either)."""
    counts = np.asarray(counts)
    if not ties:
        return pair_winner(counts)
    top = counts.max(axis=1, keepdims=True)
    split = (counts == top).sum(axis=1) > 1
    return np.where(split, 2, counts.argmax(axis=1)).astype(np.int64)


def trl_records(
    data: PairwiseDataset, with_margin: bool = False, separator: str | None = None
) -> list[dict[str, Any]]:
    """The pairs as TRL ``RewardTrainer`` rows ``{prompt, chosen, rejected}``, the majority
    winner chosen; pairs without a winner are left out. ``with_margin`` adds each pair's
    ``margin`` (0 when not given). The prompt is the context turns joined by a blank line; with
    ``separator`` (an encoder tokenizer's ``sep_token``) the turns are joined by it and it
    ends the prompt, so TRL's ``prompt + chosen`` is the input bayespref gives the model."""
    rows = []
    for example, winner in zip(data.examples, pair_winner(data.counts())):
        if winner == NO_WINNER:
            continue
        pair = (example.response_a, example.response_b)
        if separator is None:
            prompt = "\n\n".join(example.context)
        else:
            prompt = "".join(f"{turn} {separator} " for turn in example.context)
        row: dict[str, Any] = {
            "prompt": prompt,
            "chosen": pair[winner],
            "rejected": pair[1 - winner],
        }
        if with_margin:
            row["margin"] = example.margin or 0.0
        rows.append(row)
    return rows


def guess_format(record: Mapping[str, Any]) -> str:
    """The schema a record is in, from its keys (``native`` when none matches)."""
    if "chosen" in record or "rejected" in record:
        return "trl"
    if "completion_a" in record or "completion_b" in record:
        return "multipref"
    if "response_1" in record or "response_2" in record:
        return "helpsteer2"
    return "native"


def load_pairwise(
    path: str | os.PathLike[str] | Mapping[str, Any], format: str = "auto", name: str | None = None
) -> PairwiseDataset:
    """Read a JSON Lines file of pairs in one of :data:`FORMATS` (``auto``: from the first
    row's keys), or with ``format="hf"`` a Hugging Face dataset (``path``: its path or name, or
    a mapping of :data:`HF_OPTIONS`; :func:`load_pairwise_hf`). Raises :class:`DataError`
    with file and line (or row) for any malformed row."""
    if format == HF_FORMAT:
        spec = dict(path) if isinstance(path, Mapping) else {"path": path}
        unknown = sorted(set(spec) - set(HF_OPTIONS))
        if unknown or "path" not in spec:
            raise DataError(f"an hf split takes {list(HF_OPTIONS)} with a path, got {spec!r}")
        return load_pairwise_hf(**spec, name=name)
    if isinstance(path, Mapping):
        raise DataError(f"format {format!r} reads a file path, got {dict(path)!r}")
    if format != "auto" and format not in FORMATS:
        raise DataError(
            f"pairwise format must be auto or one of {(*FORMATS, HF_FORMAT)}, got {format!r}"
        )
    source = str(path)
    text = read_text(path)
    records = list(jsonl_objects(text, source))
    if not records:
        raise DataError("no pairs in the file (it is empty)", source)
    return pairs_from_records(
        [r for r, _ in records], source, format, [n for _, n in records], name or Path(path).stem
    )


def load_pairwise_hf(
    path: str | os.PathLike[str],
    split: str | None = None,
    schema: str = "auto",
    name: str | None = None,
) -> PairwiseDataset:
    """Pairs from a Hugging Face dataset whose rows are in ``schema`` (one of :data:`FORMATS`,
    or ``auto`` per row), read with the ``datasets`` library.

    ``path``: a ``save_to_disk`` folder (``datasets.load_from_disk``; a ``DatasetDict`` needs
    ``split`` unless it has one), a ``.json``/``.jsonl``/``.csv``/``.parquet`` file, or else a
    dataset name for ``datasets.load_dataset(path, split=split or "train")`` (downloaded when
    the machine can reach the Hub). A null value in a row (Arrow's fill for a key the row lacks)
    counts as an absent key. Errors name the dataset and the 1-based row.
    """
    source = str(path) + (f"[{split}]" if split else "")
    if schema != "auto" and schema not in FORMATS:
        raise DataError(f"schema must be auto or one of {list(FORMATS)}, got {schema!r}", source)
    try:
        import datasets  # optional: pip install bayespref[datasets]
    except ImportError:
        raise DataError(
            "format hf reads Hugging Face datasets and the `datasets` library is not installed: "
            "pip install 'bayespref[datasets]'",
            source,
        ) from None
    local = Path(path)
    if local.is_dir():
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if split is None and len(loaded) == 1:
                split = next(iter(loaded))
            if split not in loaded:
                raise DataError(f"give split= one of {list(loaded)} (got {split!r})", source)
            loaded = loaded[split]
    elif local.is_file():
        builder = HF_FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise DataError(f"cannot read {local.suffix!r} files: {list(HF_FILE_BUILDERS)}", source)
        loaded = datasets.load_dataset(builder, data_files=str(local), split=split or "train")
    else:
        try:
            loaded = datasets.load_dataset(str(path), split=split or "train")
        except (OSError, ValueError) as err:  # not found, offline, unknown split
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DataError(
                f"not a local dataset, and loading it by name failed: {first}", source
            ) from None
    if len(loaded) == 0:
        raise DataError("no pairs in the dataset (it is empty)", source)
    rows = (drop_nulls(row) for row in loaded)
    return pairs_from_records(rows, source, schema, None, name or local.name or "pairs")


def drop_nulls(value: Any) -> Any:
    """``value`` with every null entry of a mapping removed, at any depth (lists keep their
    items): a Hugging Face row fills the keys a row lacks with null."""
    if isinstance(value, Mapping):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def jsonl_objects(text: str, source: str) -> Iterable[tuple[dict, int]]:
    """``(object, line)`` per non-blank line; bad JSON or a non-object is a DataError."""
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw, object_pairs_hook=unique_keys)
        except JSON_ERRORS as err:
            raise DataError(f"bad JSON: {json_problem(err)}", source, number) from None
        if not isinstance(record, dict):
            raise DataError(f"expected a JSON object, got {type(record).__name__}", source, number)
        yield record, number


def pairs_from_records(
    records: Iterable[Mapping[str, Any]],
    source: str,
    format: str = "auto",
    lines: list[int] | None = None,
    name: str = "pairs",
) -> PairwiseDataset:
    """Pairs from dicts (JSONL rows, or a Hugging Face dataset's rows); ``lines`` number them
    for errors (default: row numbers from 1, named ``row``)."""
    examples: list[PairwiseExample] = []
    seen: dict[str, int] = {}
    unit = "" if lines is not None else "row "
    for index, record in enumerate(records):
        place = lines[index] if lines is not None else index + 1
        where = f"{unit}{place}"

        def fail(problem: str, place: int = place) -> DataError:
            if lines is None:
                return DataError(f"row {place}: {problem}", source)
            return DataError(problem, source, place)

        if not isinstance(record, Mapping):
            raise fail(f"expected an object, got {type(record).__name__}")
        kind = guess_format(record) if format == "auto" else format
        example = PARSERS[kind](record, fail, f"{Path(source).stem}-{place}")
        if example.id in seen:
            raise fail(f"duplicate id {example.id!r} (first seen on {unit}{seen[example.id]})")
        seen[example.id] = place
        if not example.num_votes:
            raise fail("the pair has no votes")
        logger.debug("pair %s from %s", example.id, where)
        examples.append(example)
    logger.info("%s: %d pairs", source, len(examples))
    return PairwiseDataset(examples, name)


# -- field readers ---------------------------------------------------------------------------


def text_field(record: Mapping[str, Any], key: str, fail: Any) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise fail(f"missing or non-string {key!r}")
    if not value.strip():
        raise fail(f"{key!r} is empty (or whitespace only): there is nothing to compare")
    return value


def context_field(value: Any, key: str, fail: Any) -> list[str]:
    """A context: null, a string, a list of strings, or a list of chat messages."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list):
        turns = [message_text(turn, key, fail) for turn in value]
        return [t for t in turns if t]
    raise fail(f"{key!r} must be a string, a list of strings or of chat messages, or null")


def message_text(turn: Any, key: str, fail: Any) -> str:
    if isinstance(turn, str):
        return turn
    if isinstance(turn, Mapping) and isinstance(turn.get("content"), str):
        return str(turn["content"])
    raise fail(f"{key!r}: each turn must be a string or a message with a string 'content'")


def votes_field(value: Any, fail: Any) -> np.ndarray:
    if not isinstance(value, Mapping):
        raise fail('\'votes\' must be an object like {"A": 2, "B": 1, "tie": 0}')
    counts = np.zeros(3, dtype=np.int64)
    for key, count in value.items():
        if key not in OUTCOMES:
            raise fail(f"'votes' has unknown outcome {key!r}: expected {list(OUTCOMES)}")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_VOTES:
            raise fail(f"'votes' counts must be integers in 0..{MAX_VOTES}, got {count!r}")
        counts[OUTCOMES.index(key)] = count
    return counts


def margin_field(value: Any, fail: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise fail(f"'margin' must be a number >= 0, got {value!r}")
    if value == float("inf"):
        raise fail("'margin' must be finite")
    return float(value)


def record_id(record: Mapping[str, Any], key: str, default: str, fail: Any) -> str:
    value = record.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise fail(f"{key!r} must be a non-empty string or an integer, got {value!r}")
    return str(value)


def parse_native(record: Mapping[str, Any], fail: Any, default_id: str) -> PairwiseExample:
    has_votes, has_annotations = "votes" in record, "annotations" in record
    if has_votes == has_annotations:
        raise fail("give exactly one of 'votes' (counts) or 'annotations' (per-annotator labels)")
    annotations: list[tuple[str, int]] = []
    if has_votes:
        counts = votes_field(record["votes"], fail)
    else:
        raw = record["annotations"]
        if not isinstance(raw, list):
            raise fail('\'annotations\' must be a list of {"annotator": id, "label": A|B|tie}')
        for entry in raw:
            if not isinstance(entry, Mapping) or entry.get("label") not in OUTCOMES:
                raise fail(f"each annotation needs a label in {list(OUTCOMES)}, got {entry!r}")
            who = entry.get("annotator")
            if not isinstance(who, (str, int)) or isinstance(who, bool):
                raise fail(f"each annotation needs an 'annotator' id, got {entry!r}")
            annotations.append((str(who), OUTCOMES.index(entry["label"])))
        counts = np.bincount([o for _, o in annotations], minlength=3).astype(np.int64)
    return PairwiseExample(
        id=record_id(record, "id", default_id, fail),
        context=context_field(record.get("context"), "context", fail),
        response_a=text_field(record, "response_a", fail),
        response_b=text_field(record, "response_b", fail),
        counts=counts,
        annotations=annotations,
        margin=margin_field(record.get("margin"), fail),
    )


def parse_trl(record: Mapping[str, Any], fail: Any, default_id: str) -> PairwiseExample:
    chosen, rejected = record.get("chosen"), record.get("rejected")
    context = context_field(record.get("prompt"), "prompt", fail)
    responses = []
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if isinstance(value, list):  # conversational: the last message is the response
            if not value:
                raise fail(f"{key!r} is an empty conversation")
            turns = [message_text(turn, key, fail) for turn in value]
            if "prompt" not in record and key == "chosen":
                context = [t for t in turns[:-1] if t]  # implicit prompt: the shared turns
            value = turns[-1]
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{key!r} must be a non-empty string or a list of chat messages")
        responses.append(value)
    return PairwiseExample(
        id=record_id(record, "id", default_id, fail),
        context=context,
        response_a=responses[0],
        response_b=responses[1],
        counts=np.array([1, 0, 0], dtype=np.int64),
        margin=margin_field(record.get("margin"), fail),
    )


def parse_multipref(record: Mapping[str, Any], fail: Any, default_id: str) -> PairwiseExample:
    annotations: list[tuple[str, int]] = []
    for key in ("normal_worker_annotations", "expert_worker_annotations"):
        entries = record.get(key) or []
        if not isinstance(entries, list):
            raise fail(f"{key!r} must be a list of annotations")
        for number, entry in enumerate(entries):
            pref = entry.get("overall_pref") if isinstance(entry, Mapping) else None
            if pref not in MULTIPREF_OUTCOME:
                raise fail(
                    f"{key}[{number}].overall_pref must be one of {list(MULTIPREF_OUTCOME)}, "
                    f"got {pref!r}"
                )
            who = entry.get("evaluator", f"{key}-{number}")
            annotations.append((str(who), MULTIPREF_OUTCOME[pref]))
    counts = np.bincount([o for _, o in annotations], minlength=3).astype(np.int64)
    return PairwiseExample(
        id=record_id(record, "comparison_id", default_id, fail),
        context=context_field(record.get("text"), "text", fail),
        response_a=text_field(record, "completion_a", fail),
        response_b=text_field(record, "completion_b", fail),
        counts=counts,
        annotations=annotations,
    )


def strength_outcome(value: Any, where: str, fail: Any) -> int:
    """HelpSteer2 strength -3..3 -> outcome (negative: response 1 = A better)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -3 <= value <= 3:
        raise fail(f"{where} must be a number in -3..3, got {value!r}")
    return 0 if value < 0 else 1 if value > 0 else 2


def parse_helpsteer2(record: Mapping[str, Any], fail: Any, default_id: str) -> PairwiseExample:
    strength = record.get("preference_strength")
    overall = strength_outcome(strength, "'preference_strength'", fail)
    individual = record.get("all_preferences_unprocessed")
    annotations: list[tuple[str, int]] = []
    if individual:
        if not isinstance(individual, list):
            raise fail("'all_preferences_unprocessed' must be a list")
        for number, entry in enumerate(individual):
            value = entry.get("strength") if isinstance(entry, Mapping) else None
            where = f"all_preferences_unprocessed[{number}].strength"
            annotations.append((f"annotator-{number}", strength_outcome(value, where, fail)))
        counts = np.bincount([o for _, o in annotations], minlength=3).astype(np.int64)
    else:
        counts = np.bincount([overall], minlength=3).astype(np.int64)
    return PairwiseExample(
        id=record_id(record, "id", default_id, fail),
        context=context_field(record.get("prompt"), "prompt", fail),
        response_a=text_field(record, "response_1", fail),
        response_b=text_field(record, "response_2", fail),
        counts=counts,
        annotations=annotations,
        margin=abs(float(strength)),  # type: ignore[arg-type]  # checked by strength_outcome
    )


PARSERS = {
    "native": parse_native,
    "trl": parse_trl,
    "multipref": parse_multipref,
    "helpsteer2": parse_helpsteer2,
}
