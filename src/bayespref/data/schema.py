"""The in-memory form every loader produces: a label space, annotated examples, a load report.

An :class:`AnnotatedExample` keeps each annotator's label (so that annotator models such as
Dawid-Skene can use them) and the per-class counts derived from them. Priors, empirical
distributions and majority labels are computed from the counts (see :mod:`bayespref.data.priors`).
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

TIE_RULES = ("less-preferred", "more-preferred", "first", "last")

# A class index written as text: ASCII digits only (``str.isdigit`` also accepts "²", which
# ``int`` rejects) and few enough of them for ``int`` (which refuses over 4300 digits).
_INDEX_TEXT = re.compile(r"-?[0-9]{1,18}")


class DataError(ValueError):
    """A problem with input data, located by file and line (1-based) where known.

    ``str(err)`` reads ``path:line: problem`` so that editors and terminals can jump to it.
    """

    def __init__(self, problem: str, path: str | None = None, line: int | None = None):
        self.problem = problem
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{problem}")


@dataclasses.dataclass(frozen=True)
class LabelSpace:
    """The preference classes of a dataset and the utility of each (higher = more preferred).

    ``tie_break`` decides the majority label when several classes share the top count:
    ``less-preferred`` (default) takes the tied class with the lowest utility, which is what the
    d-PM reference code's ``+0.5`` toward its last class does for its datasets;
    ``more-preferred`` the highest utility; ``first``/``last`` the lowest/highest class index.
    ``aliases`` maps extra spellings (e.g. ``"-1"`` or ``"Simple Reflection"``) to class names.
    """

    names: tuple[str, ...]
    utilities: tuple[float, ...]
    tie_break: str = "less-preferred"
    aliases: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if len(self.names) < 2:
            raise ValueError(f"a label space needs at least 2 classes, got {list(self.names)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"class names must be unique, got {list(self.names)}")
        if len(self.utilities) != len(self.names):
            raise ValueError(
                f"{len(self.names)} classes but {len(self.utilities)} utilities: "
                f"{list(self.names)} vs {list(self.utilities)}"
            )
        if self.tie_break not in TIE_RULES:
            raise ValueError(f"tie_break must be one of {TIE_RULES}, got {self.tie_break!r}")
        for alias, target in self.aliases:
            if target not in self.names:
                raise ValueError(f"alias {alias!r} points at unknown class {target!r}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def index(self, label: Any) -> int:
        """Class index of ``label``: a class name, an alias, or an integer index (or its string).

        Raises ``KeyError`` with the allowed labels listed when ``label`` is unknown; loaders
        turn that into a :class:`DataError` with file and line.
        """
        if isinstance(label, bool):
            raise KeyError(self._unknown(label))
        if isinstance(label, (int, np.integer)):
            if 0 <= int(label) < self.num_classes:
                return int(label)
            raise KeyError(self._unknown(label))
        if isinstance(label, float) and label.is_integer():
            return self.index(int(label))
        if isinstance(label, str):
            text = label.strip()
            if text in self.names:
                return self.names.index(text)
            aliases = dict(self.aliases)
            if text in aliases:
                return self.names.index(aliases[text])
            if _INDEX_TEXT.fullmatch(text) and 0 <= int(text) < self.num_classes:
                return int(text)
        raise KeyError(self._unknown(label))

    def _unknown(self, label: Any) -> str:
        allowed = list(self.names) + [a for a, _ in self.aliases]
        return (
            f"unknown label {label!r}; allowed: {allowed} "
            f"(or a class index 0..{self.num_classes - 1})"
        )

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "utilities": list(self.utilities),
            "tie_break": self.tie_break,
            "aliases": {a: t for a, t in self.aliases},
        }

    @classmethod
    def from_dict(cls, d: dict) -> LabelSpace:
        """The inverse of :meth:`to_dict` (the mapping of :func:`as_label_space`)."""
        return as_label_space(d)


@dataclasses.dataclass
class AnnotatedExample:
    """One item: a context (list of turns, possibly empty), a response, and its annotations.

    ``counts[l]`` is how many annotators chose class ``l``; ``annotations`` keeps who said
    what, as ``(annotator_id, class_index)`` pairs, when the source has annotator ids.
    ``true_distribution`` is the generating distribution ``p*`` (synthetic data only).
    """

    id: str
    context: list[str]
    response: str
    counts: np.ndarray  # (C,) int64
    annotations: list[tuple[str, int]] | None = None
    true_distribution: np.ndarray | None = None  # (C,) float64, synthetic only
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def num_annotators(self) -> int:
        return int(self.counts.sum())


@dataclasses.dataclass
class LoadReport:
    """What a load did: lines/items read, kept, skipped, and why each skip happened."""

    source: str
    read: int = 0
    kept: int = 0
    skipped: int = 0
    reasons: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    examples_of_skips: list[str] = dataclasses.field(default_factory=list)

    def skip(self, reason: str, where: str = "") -> None:
        self.skipped += 1
        self.reasons[reason] += 1
        if len(self.examples_of_skips) < 5:
            self.examples_of_skips.append(f"{where}: {reason}" if where else reason)

    def summary(self) -> str:
        text = f"{self.source}: read {self.read}, kept {self.kept}, skipped {self.skipped}"
        if self.reasons:
            text += " (" + ", ".join(f"{n} {r}" for r, n in self.reasons.most_common()) + ")"
        return text

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "read": self.read,
            "kept": self.kept,
            "skipped": self.skipped,
            "reasons": dict(self.reasons),
        }


@dataclasses.dataclass
class AnnotatedDataset:
    """A list of examples over one label space, with the report of how it was loaded."""

    examples: list[AnnotatedExample]
    label_space: LabelSpace
    name: str = "dataset"
    report: LoadReport | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> AnnotatedExample:
        return self.examples[i]

    @property
    def num_classes(self) -> int:
        return self.label_space.num_classes

    def counts(self) -> np.ndarray:
        """(N, C) int64 annotation counts."""
        if not self.examples:
            return np.zeros((0, self.num_classes), dtype=np.int64)
        return np.stack([e.counts for e in self.examples]).astype(np.int64)

    def true_distributions(self) -> np.ndarray | None:
        """(N, C) generating distributions when every example has one, else None."""
        distributions = [
            e.true_distribution for e in self.examples if e.true_distribution is not None
        ]
        if not distributions or len(distributions) < len(self.examples):
            return None
        return np.stack(distributions).astype(np.float64)

    def subset(self, indices: Sequence[int], name: str | None = None) -> AnnotatedDataset:
        return AnnotatedDataset(
            examples=[self.examples[i] for i in indices],
            label_space=self.label_space,
            name=name or self.name,
            report=self.report,
        )


LABEL_SPACE_KEYS = ("names", "utilities", "tie_break", "aliases")
LABEL_SPACE_EXAMPLE = '{"names": ["bad", "ok", "good"], "utilities": [-1, 0, 1]}'


def as_label_space(spec: LabelSpace | dict) -> LabelSpace:
    """A :class:`LabelSpace` from itself or from a mapping, the one spelling everywhere.

    The mapping is what :meth:`LabelSpace.to_dict` writes: ``names`` (the classes),
    ``utilities`` (one number per class, higher = more preferred), optionally ``tie_break`` and
    ``aliases`` (alias -> class name). The same keys in the config key ``data.label_space``, a
    ``meta.json`` sidecar and the ``label_space=`` argument of a loader. Raises ``ValueError``
    saying what is missing or inconsistent, naming the right keys.
    """
    if isinstance(spec, LabelSpace):
        return spec
    if not isinstance(spec, dict):
        raise ValueError(
            f"a label space is a mapping such as {LABEL_SPACE_EXAMPLE}, got {type(spec).__name__}"
        )
    unknown = sorted(set(spec) - set(LABEL_SPACE_KEYS), key=str)
    if unknown:
        hint = " (the classes go under 'names')" if "classes" in unknown else ""
        raise ValueError(
            f"unknown label-space key(s) {unknown}{hint}; the keys are {list(LABEL_SPACE_KEYS)}, "
            f"e.g. {LABEL_SPACE_EXAMPLE}"
        )
    names = spec.get("names")
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"'names' must be a list of class names (strings), e.g. {LABEL_SPACE_EXAMPLE}"
        )
    utilities = spec.get("utilities")
    if not isinstance(utilities, (list, tuple)) or not all(
        isinstance(u, (int, float)) and not isinstance(u, bool) for u in utilities
    ):
        raise ValueError(
            f"'utilities' must be a list of numbers, one per class, e.g. {LABEL_SPACE_EXAMPLE}"
        )
    aliases = spec.get("aliases") or {}
    if not isinstance(aliases, dict):
        raise ValueError("'aliases' must be a mapping alias -> class name")
    tie_break = spec.get("tie_break") or "less-preferred"
    if not isinstance(tie_break, str):
        raise ValueError(f"'tie_break' must be one of {TIE_RULES}, got {tie_break!r}")
    return LabelSpace(
        names=tuple(names),
        utilities=tuple(float(u) for u in utilities),
        tie_break=tie_break,
        aliases=tuple((str(a), str(t)) for a, t in aliases.items()),
    )


def require_same_classes(data: LabelSpace, model: LabelSpace, source: str | None) -> None:
    """Raise :class:`DataError` (naming ``source``) when data and a model have other classes.

    A model predicts a distribution over its own classes; evaluating it against data labelled
    with other classes (or the same ones in another order) would compare unrelated numbers.
    """
    if data.names != model.names:
        raise DataError(
            f"the data's classes {list(data.names)} differ from the model's {list(model.names)}; "
            "give the data's label space with the model's names in the same order "
            f"(data.label_space or a meta.json sidecar: {LABEL_SPACE_EXAMPLE})",
            source,
        )
