"""The training and validation splits of a run, as its ``data`` config section describes them.

:func:`load_split` loads one file (or synthetic spec) with the section's loader and options;
:func:`load_train_valid` loads both splits, holding out ``valid_fraction`` of train when no
validation data is given, and subsampling train when ``max_train_items`` is set (seeded).

A user's mistake here (a file for the synthetic format, a loader option the format does not
take or needs, a split with no items) is a :class:`DataError` naming the file or the keys,
raised before any loader runs where it can be.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from . import load_dataset, loader_option_problem
from .aggregation import dawid_skene_prior
from .schema import AnnotatedDataset, DataError, as_label_space

if TYPE_CHECKING:  # the config layer sits above data: its types only, never an import
    from ..config import DataConfig

logger = logging.getLogger(__name__)


def load_split(data: DataConfig, spec: Any, split: str) -> AnnotatedDataset:
    """One split: ``spec`` is a file path or a dict of loader options (``path`` among them)."""
    options = dict(data.options)
    if isinstance(spec, dict):
        options.update(spec)
        path = options.pop("path", None)
    else:
        path = spec
    source = str(path) if path is not None else None
    if data.format == "synthetic" and path is not None:
        raise DataError(
            "data.format is synthetic, which generates its data and reads no file: give this "
            "file's format (data.format=native, or `bayespref evaluate --format native`)",
            source,
        )
    if data.format != "synthetic" and path is None:
        raise DataError(
            f"the {split} split has no file: format {data.format!r} reads one "
            f"(data.{split}=<path>, or {{path: <path>, ...options}})"
        )
    if data.label_space is not None:
        try:
            options["label_space"] = as_label_space(data.label_space)
        except ValueError as err:
            raise DataError(f"data.label_space: {err}", source) from None
    problem = loader_option_problem(data.format, options)
    if problem is not None:
        raise DataError(
            f"{problem} (loader options: data.options, the split's own mapping, or "
            "`bayespref evaluate --option key=value`)",
            source,
        )
    dataset = load_dataset(data.format, path, strict=data.strict, **options)
    if dataset.report is not None:
        logger.info("%s split: %s", split, dataset.report.summary())
    if len(dataset) == 0:
        report = dataset.report
        if report is None or report.read == 0:
            why = "it holds no items (an empty file, or a CSV header without rows)"
        else:
            why = f"every item was skipped ({report.summary()})"
        raise DataError(
            f"nothing to {'train on' if split == 'train' else 'evaluate'}: {why}", source
        )
    return dataset


def training_prior(dataset: AnnotatedDataset, data: DataConfig) -> np.ndarray | None:
    """The training split's prior when ``data.prior`` is not the count prior (None: counts)."""
    if data.prior == "dawid-skene":
        return dawid_skene_prior(dataset, data.alpha)
    return None


def load_train_valid(data: DataConfig, seed: int) -> tuple[AnnotatedDataset, AnnotatedDataset]:
    """Training and validation sets; holds out ``valid_fraction`` of train when valid is null."""
    if data.train is None and data.format != "synthetic":
        raise DataError(f"data.train is required for format {data.format!r}")
    train_set = load_split(data, data.train if data.train is not None else {}, "train")
    rng = np.random.default_rng(seed)
    if data.valid is not None:
        valid_set = load_split(data, data.valid, "valid")
    else:
        order = rng.permutation(len(train_set))
        n_valid = max(1, int(round(data.valid_fraction * len(train_set))))
        valid_set = train_set.subset(order[:n_valid].tolist(), name=f"{train_set.name}-heldout")
        train_set = train_set.subset(order[n_valid:].tolist())
    if data.max_train_items is not None and len(train_set) > data.max_train_items:
        keep = np.sort(rng.permutation(len(train_set))[: data.max_train_items])
        train_set = train_set.subset(keep.tolist())
    if valid_set.label_space.names != train_set.label_space.names:
        raise DataError(
            f"train and valid label spaces differ: {list(train_set.label_space.names)} vs "
            f"{list(valid_set.label_space.names)}",
            valid_set.report.source if valid_set.report is not None else None,
        )
    return train_set, valid_set
