"""Any local Hugging Face ``datasets`` dataset, through a column mapping.

``path`` is a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
(read with ``datasets.load_from_disk``; a ``DatasetDict`` needs ``split=`` unless it has one
split), or a data file that ``datasets.load_dataset`` reads locally (``.json``/``.jsonl``,
``.csv``, ``.parquet``, ``.arrow``). Nothing is downloaded.

``columns`` maps the native fields to column names::

    {"id": "uid", "context": "history", "response": "reply", "labels": "votes",
     "annotators": "workers"}          # or "counts": "label_counts" instead of labels

``response`` and one of ``labels``/``counts`` are required; the values follow the native
format (:mod:`bayespref.data.native`): context a string or list of strings, labels a list of
class names/aliases/indices with ``None`` for a missing annotator, counts a list of ``C``
integers or a mapping class -> count. Columns not mapped are kept in ``meta``.

Classes come from ``label_space``, else from ``meta.json`` in the dataset directory (or
``<directory>.meta.json`` beside it), or ``<stem>.meta.json`` / ``meta.json`` beside a data
file. Errors name the path and the 1-based row; the skip and strict rules are the native
ones. Needs ``pip install bayespref[datasets]``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ._common import NO_USABLE_LABEL, Collector
from .native import parse_record, record_id, resolve_label_space
from .schema import AnnotatedDataset, DataError, LabelSpace

logger = logging.getLogger(__name__)

FIELDS = ("id", "context", "response", "labels", "counts", "annotators")
EXAMPLE = "{response: reply, labels: votes}"
BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".arrow": "arrow",
}


def _import_datasets():
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "the 'hf' loader needs the Hugging Face `datasets` library: "
            "pip install bayespref[datasets]"
        ) from err
    return datasets


def load_hf(
    path: str | Path,
    *,
    columns: dict[str, str],
    label_space: LabelSpace | dict | None = None,
    split: str | None = None,
    strict: bool = False,
    name: str | None = None,
) -> AnnotatedDataset:
    """Load a local ``datasets`` dataset through ``columns`` (see the module docstring).

    A malformed ``columns`` mapping raises :class:`DataError` naming ``path``; a missing
    ``datasets`` library raises ``ImportError`` saying what to install.
    """
    path = Path(path)
    source = str(path)
    if not isinstance(columns, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in columns.items()
    ):
        raise DataError(
            f"columns must map native fields to column names, e.g. {EXAMPLE}, got {columns!r}",
            source,
        )
    unknown = set(columns) - set(FIELDS)
    if unknown:
        raise DataError(
            f"unknown keys in columns: {sorted(unknown)}; allowed: {list(FIELDS)}", source
        )
    if "response" not in columns or ("labels" in columns) == ("counts" in columns):
        raise DataError(
            f"columns must map 'response' and exactly one of 'labels' or 'counts', got {columns}",
            source,
        )
    datasets = _import_datasets()
    if path.is_dir():
        space = resolve_label_space(label_space, path)
        loaded = datasets.load_from_disk(source)
        if isinstance(loaded, datasets.DatasetDict):
            if split is None and len(loaded) == 1:
                split = next(iter(loaded))
            if split not in loaded:
                raise DataError(f"pass split= one of {list(loaded)} (got {split!r})", source)
            loaded = loaded[split]
    elif path.is_file():
        space = resolve_label_space(label_space, path)
        builder = BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(
                f"cannot load {path.suffix!r} files; use one of {sorted(BUILDERS)} "
                "or a save_to_disk directory",
                source,
            )
        loaded = datasets.load_dataset(builder, data_files=source, split=split or "train")
    else:
        raise DataError("no such file or directory", source)
    absent = [c for c in columns.values() if c not in loaded.column_names]
    if absent:
        raise DataError(
            f"columns {absent} not in the dataset (it has {loaded.column_names})", source
        )

    collector = Collector(
        source, space, strict=strict, name=name or path.stem, logger=logger, unit="row"
    )
    mapped = set(columns.values())
    for row_number, row in enumerate(loaded, start=1):
        collector.read()
        record = {field: row[column] for field, column in columns.items()}
        record.update({k: v for k, v in row.items() if k not in mapped and k not in FIELDS})
        example, problem = parse_record(
            record,
            space,
            default_id=f"{path.name}:{row_number}",
            path=source,
            line=None,
            prefix=f"row {row_number}: ",
        )
        if example is None:
            item_id = record_id(record, f"{path.name}:{row_number}", None)
            collector.skip(NO_USABLE_LABEL, row_number, problem, item_id=item_id)
        else:
            collector.keep(example, row_number)
    return collector.finish()
