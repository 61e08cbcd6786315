"""The training and validation splits of a run, as its ``data`` config section describes them.

:func:`load_split` loads one file (or synthetic spec) with the section's loader and options;
:func:`load_train_valid` loads both splits, holding out ``valid_fraction`` of train when no
validation data is given, and subsampling train when ``max_train_items`` is set (seeded).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from . import load_dataset
from .aggregation import dawid_skene_prior
from .schema import AnnotatedDataset, LabelSpace

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
    if data.label_space is not None:
        options["label_space"] = LabelSpace.from_dict(data.label_space)
    dataset = load_dataset(data.format, path, strict=data.strict, **options)
    if dataset.report is not None:
        logger.info("%s split: %s", split, dataset.report.summary())
    if len(dataset) == 0:
        raise ValueError(f"the {split} split is empty after loading ({data.format}: {spec})")
    return dataset


def training_prior(dataset: AnnotatedDataset, data: DataConfig) -> np.ndarray | None:
    """The training split's prior when ``data.prior`` is not the count prior (None: counts)."""
    if data.prior == "dawid-skene":
        return dawid_skene_prior(dataset, data.alpha)
    return None


def load_train_valid(data: DataConfig, seed: int) -> tuple[AnnotatedDataset, AnnotatedDataset]:
    """Training and validation sets; holds out ``valid_fraction`` of train when valid is null."""
    if data.train is None and data.format != "synthetic":
        raise ValueError(f"data.train is required for format {data.format!r}")
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
        raise ValueError(
            f"train and valid label spaces differ: {train_set.label_space.names} vs "
            f"{valid_set.label_space.names}"
        )
    return train_set, valid_set
