"""Data: loaders that turn annotated files into :class:`AnnotatedDataset`, priors, synthetic data.

One entry point, :func:`load_dataset`, dispatches on the format name:

============  ==========================================================================
format        what it reads
============  ==========================================================================
native        the documented JSONL/CSV format (:mod:`bayespref.data.native`)
lewidi        LeWiDi 2023 harmonised JSON (:mod:`bayespref.data.lewidi`)
convabuse     the original ConvAbuse split CSVs (:mod:`bayespref.data.convabuse`)
mi            the Motivational Interviewing dataset CSV (:mod:`bayespref.data.mi`)
hf            a local Hugging Face ``datasets`` dataset (:mod:`bayespref.data.hf`)
synthetic     the embedded emotional-support dataset with a known ``p*``
              (:mod:`bayespref.data.synthetic`; no path)
============  ==========================================================================

The contract every loader keeps: structurally broken input (bad JSON, wrong types, a missing
``response``, a truncated CSV row, bytes that are not UTF-8, an unknown label, a repeated id)
raises :class:`DataError` naming the file and line, whatever ``strict`` is; an item with no
usable label (all annotators missing, zero counts) is skipped and counted in
``dataset.report``, or raises :class:`DataError` with ``strict=True``. The report
(read / kept / skipped, with reasons) is logged at INFO; nothing is dropped silently.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path

from ._common import JSON_ERRORS, json_problem
from .convabuse import CONVABUSE_BINARY, CONVABUSE_SEVERITY, load_convabuse
from .hf import load_hf
from .lewidi import LEWIDI_LABEL_SPACES, load_lewidi
from .mi import MI_CODES, MI_LABEL_SPACE, load_mi
from .native import load_native
from .priors import empirical_distribution, majority_label, smoothed_prior
from .schema import (
    LABEL_SPACE_EXAMPLE,
    LABEL_SPACE_KEYS,
    TIE_RULES,
    AnnotatedDataset,
    AnnotatedExample,
    DataError,
    LabelSpace,
    LoadReport,
    as_label_space,
    require_same_classes,
)
from .synthetic import (
    SYNTHETIC_LABEL_SPACE,
    SimulatedAnnotator,
    SyntheticOracle,
    default_annotator_pool,
    load_synthetic,
    make_synthetic_contexts,
    make_synthetic_dataset,
)

LOADERS: dict[str, Callable[..., AnnotatedDataset]] = {
    "native": load_native,
    "lewidi": load_lewidi,
    "convabuse": load_convabuse,
    "mi": load_mi,
    "hf": load_hf,
    "synthetic": load_synthetic,
}


def loader_options(format: str) -> list[str]:
    """The keyword options ``format``'s loader accepts (besides ``path`` and ``strict``)."""
    loader = _loader(format)
    return [
        name
        for name, p in inspect.signature(loader).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name != "strict"
    ]


# How to write a required option, for the message that asks for it.
OPTION_EXAMPLES = {
    "columns": "columns={response: <column>, labels: <column>} (native field -> your column; "
    "counts: instead of labels, and optionally id, context, annotators)",
}


def required_options(format: str) -> list[str]:
    """The keyword options ``format``'s loader cannot do without (e.g. ``hf``: ``columns``)."""
    loader = _loader(format)
    return [
        name
        for name, p in inspect.signature(loader).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is inspect.Parameter.empty
    ]


def loader_option_problem(format: str, options: Mapping[str, object]) -> str | None:
    """What is wrong with ``options`` for ``format``'s loader (None: nothing): an unknown
    format, an option the loader does not take, a required option missing. One line, for a
    ``ConfigError`` or ``DataError`` that says where the options came from."""
    if format not in LOADERS:
        return f"unknown data format {format!r}; formats: {list(LOADERS)}"
    allowed = loader_options(format)
    unknown = [name for name in options if name not in allowed]
    if unknown:
        return f"unknown option(s) {unknown} for format {format!r}; its options: {allowed}"
    missing = [name for name in required_options(format) if name not in options]
    if missing:
        how = "; ".join(OPTION_EXAMPLES.get(name, name) for name in missing)
        return f"format {format!r} needs the option(s) {missing}: {how}"
    return None


def load_dataset(
    format: str, path: str | Path | None = None, *, strict: bool = False, **options
) -> AnnotatedDataset:
    """Load ``path`` with the loader registered as ``format`` in :data:`LOADERS`.

    ``options`` go to that loader (e.g. ``label_space=`` for ``native``, ``label_scheme=`` for
    ``lewidi``/``convabuse``, ``n=``/``seed=`` for ``synthetic``). Unknown formats raise
    ``ValueError``; unknown options ``TypeError`` naming the option and listing the allowed
    ones.
    """
    loader = _loader(format)
    allowed = loader_options(format)
    for option in options:
        if option not in allowed:
            raise TypeError(f"unknown option {option!r} for format {format!r}; allowed: {allowed}")
    if path is None and format != "synthetic":
        raise ValueError(f"format {format!r} needs a path")
    return loader(path, strict=strict, **options)


def _loader(format: str) -> Callable[..., AnnotatedDataset]:
    try:
        return LOADERS[format]
    except KeyError:
        raise ValueError(f"unknown data format {format!r}; formats: {list(LOADERS)}") from None


__all__ = [
    "JSON_ERRORS",
    "LABEL_SPACE_EXAMPLE",
    "LABEL_SPACE_KEYS",
    "OPTION_EXAMPLES",
    "CONVABUSE_BINARY",
    "CONVABUSE_SEVERITY",
    "LEWIDI_LABEL_SPACES",
    "LOADERS",
    "MI_CODES",
    "MI_LABEL_SPACE",
    "SYNTHETIC_LABEL_SPACE",
    "TIE_RULES",
    "AnnotatedDataset",
    "AnnotatedExample",
    "DataError",
    "LabelSpace",
    "LoadReport",
    "SimulatedAnnotator",
    "SyntheticOracle",
    "as_label_space",
    "default_annotator_pool",
    "empirical_distribution",
    "json_problem",
    "load_convabuse",
    "load_dataset",
    "load_hf",
    "load_lewidi",
    "load_mi",
    "load_native",
    "load_synthetic",
    "loader_option_problem",
    "loader_options",
    "majority_label",
    "make_synthetic_contexts",
    "make_synthetic_dataset",
    "require_same_classes",
    "required_options",
    "smoothed_prior",
]
