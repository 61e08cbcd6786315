"""SemEval-2023 Task 11 (LeWiDi 2) harmonised JSON: MD-Agreement, HS-Brexit, ArMIS, ConvAbuse.

A file (e.g. ``MD-Agreement_train.json``) is one JSON object ``{item id: item}``; each item has
``text``, ``annotators`` (``"Ann1,Ann5,..."``) and ``annotations`` (``"0,1,..."``, parallel to
``annotators``). The dataset is read from the file-name prefix, or given as ``dataset=``.

Classes and utilities (the non-offensive class is preferred, utility 1; the other 0):

- MD-Agreement: ``not offensive`` (1), ``offensive`` (0); source labels ``0``, ``1``.
- HS-Brexit: ``not hate speech`` (1), ``hate speech`` (0).
- ArMIS: ``not misogynistic`` (1), ``misogynistic`` (0).
- ConvAbuse: ``label_scheme="binary"`` (default): ``not abusive`` (1), ``abusive`` (0);
  ``label_scheme="severity"``: the 5 ConvAbuse classes, utility = severity
  (see :mod:`bayespref.data.convabuse`).

The binary classes take the aliases ``"0"`` and ``"1"``. For ConvAbuse, annotations are
severities in {1, 0, -1, -2, -3}; the binary scheme is LeWiDi's own soft label (1 and 0 ->
not abusive, -1..-3 -> abusive). ``text`` there is itself a JSON string with ``prev_agent,
prev_user, agent, user``: ``context = [prev_agent, prev_user, agent]`` (empty turns dropped),
``response = user``. For the tweet datasets ``context = []`` and ``response = text``.

Annotator ids are kept (``AnnotatedExample.annotations``); ``meta`` keeps ``hard_label``,
``soft_label``, ``split``, ``lang`` and ``other_info``. Line numbers in errors point at the
item's key in the file. An empty ``annotations`` string is an item without usable label
(skipped and counted; ``DataError`` with ``strict=True``); anything else malformed, an empty
``text`` (ConvAbuse: an empty user turn) among it, raises :class:`DataError`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ._common import (
    EMPTY_RESPONSE,
    JSON_ERRORS,
    NO_USABLE_LABEL,
    Collector,
    counts_of,
    is_blank,
    iter_json_object,
    json_problem,
    label_index,
    read_text,
    split_labels,
    unique_keys,
)
from .convabuse import SEVERITIES, convabuse_label_space, severity_class
from .schema import AnnotatedDataset, AnnotatedExample, DataError, LabelSpace, as_label_space

logger = logging.getLogger(__name__)


def _binary(negative: str, positive: str) -> LabelSpace:
    return LabelSpace(
        names=(negative, positive),
        utilities=(1.0, 0.0),
        aliases=(("0", negative), ("1", positive)),
    )


LEWIDI_LABEL_SPACES = {
    "MD-Agreement": _binary("not offensive", "offensive"),
    "HS-Brexit": _binary("not hate speech", "hate speech"),
    "ArMIS": _binary("not misogynistic", "misogynistic"),
}
LEWIDI_DATASETS = (*LEWIDI_LABEL_SPACES, "ConvAbuse")
CONVABUSE_TURNS = ("prev_agent", "prev_user", "agent", "user")
META_FIELDS = ("hard_label", "soft_label", "split", "lang", "other_info")


def lewidi_dataset_of(path: Path) -> str | None:
    """The LeWiDi dataset a file belongs to, from its name (``HS-Brexit_dev.json``)."""
    stem = path.name.lower()
    for dataset in LEWIDI_DATASETS:
        if stem.startswith(dataset.lower()):
            return dataset
    return None


def load_lewidi(
    path: str | Path,
    *,
    dataset: str | None = None,
    label_scheme: str = "binary",
    label_space: LabelSpace | dict | None = None,
    strict: bool = False,
    name: str | None = None,
) -> AnnotatedDataset:
    """Load one LeWiDi 2023 JSON file (see the module docstring for classes and fields).

    ``label_space`` renames the classes of a binary dataset (2 classes, index 0 = label
    ``"0"``); ``label_scheme`` (``binary`` or ``severity``) applies to ConvAbuse only.
    """
    path = Path(path)
    source = str(path)
    dataset = dataset or lewidi_dataset_of(path)
    if dataset not in LEWIDI_DATASETS:
        raise DataError(
            f"unknown LeWiDi dataset {dataset!r}: name the file <dataset>_<split>.json or pass "
            f"dataset= one of {list(LEWIDI_DATASETS)}",
            source,
        )
    is_convabuse = dataset == "ConvAbuse"
    if is_convabuse:
        if label_space is not None:
            raise ValueError("ConvAbuse takes label_scheme='binary' or 'severity', not label_space")
        space = convabuse_label_space(label_scheme)
    else:
        if label_scheme != "binary":
            raise ValueError(f"label_scheme={label_scheme!r} applies to ConvAbuse only")
        space = LEWIDI_LABEL_SPACES[dataset] if label_space is None else as_label_space(label_space)
        if space.num_classes != 2:
            raise ValueError(f"{dataset} is binary; label_space has {space.num_classes} classes")

    text = read_text(path)
    collector = Collector(source, space, strict=strict, name=name or path.stem, logger=logger)
    for key, item, line in iter_json_object(text, source):
        collector.read()

        def fail(problem: str, line=line, key=key) -> DataError:
            return DataError(f"item {key!r}: {problem}", source, line)

        if not isinstance(item, dict):
            raise fail(f"expected an object, got {type(item).__name__}")
        for field in ("text", "annotators", "annotations"):
            if field not in item:
                raise fail(f"missing required field {field!r}")
            if not isinstance(item[field], str):
                raise fail(f"{field!r} must be a string, got {type(item[field]).__name__}")
        annotators = split_labels(item["annotators"])
        labels = split_labels(item["annotations"])
        if len(annotators) != len(labels):
            raise fail(f"{len(annotators)} annotators but {len(labels)} annotations")
        if any(not a for a in annotators) or any(not lab for lab in labels):
            raise fail("empty entry in 'annotators' or 'annotations'")
        if is_convabuse:
            indices = [severity_class(_severity(lab, fail), label_scheme) for lab in labels]
            context, response = _convabuse_turns(item["text"], fail)
        else:
            indices = [label_index(space, lab, source, line) for lab in labels]
            context, response = [], item["text"]
        if is_blank(response):
            raise fail(EMPTY_RESPONSE + (" (the 'user' turn in 'text')" if is_convabuse else ""))
        if not indices:
            collector.skip(NO_USABLE_LABEL, line, f"item {key!r} has no annotations")
            continue
        example = AnnotatedExample(
            id=key,
            context=context,
            response=response,
            counts=counts_of(indices, space.num_classes),
            annotations=list(zip(annotators, indices, strict=True)),
            meta={"dataset": dataset, **{f: item[f] for f in META_FIELDS if f in item}},
        )
        collector.keep(example, line)
    return collector.finish()


def _severity(label: str, fail) -> int:
    try:
        severity = int(label)
    except ValueError:
        severity = None
    if severity not in SEVERITIES:
        raise fail(f"unknown label {label!r}; allowed severities: {[str(s) for s in SEVERITIES]}")
    return severity


def _convabuse_turns(text: str, fail) -> tuple[list[str], str]:
    try:
        turns = json.loads(text, object_pairs_hook=unique_keys)
    except JSON_ERRORS as err:
        raise fail(f"'text' is not the expected JSON conversation: {json_problem(err)}") from None
    if not isinstance(turns, dict) or any(
        not isinstance(turns.get(t), str) for t in CONVABUSE_TURNS
    ):
        raise fail(f"'text' must be a JSON object with string fields {list(CONVABUSE_TURNS)}")
    context = [turns[t] for t in CONVABUSE_TURNS[:3] if turns[t].strip()]
    return context, turns["user"]
