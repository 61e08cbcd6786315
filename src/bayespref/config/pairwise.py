"""The reward-model recipe's config (``bayespref train-pairwise``): pairwise data, the loss
on pair outcomes, and :class:`PairwiseTrainConfig` joining them with the shared sections."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any

from ..data.pairwise import FORMATS, HF_FORMAT, HF_OPTIONS
from ..losses import LOSSES
from ..metrics import METRICS
from ..pairwise_losses import PAIRWISE_LOSSES
from ..pairwise_metrics import PAIRWISE_METRICS
from .core import ConfigError, field_help, load_yaml
from .preference import ModelConfig
from .shared import PaddedBatchesOptimConfig, PeftConfig, RunConfig

PAIRWISE_DATA_FORMATS = ("auto", *FORMATS, HF_FORMAT, "synthetic")
SYNTHETIC_OPTIONS = ("n", "seed", "min_annotators", "max_annotators")
PAIRWISE_LOSS_NAMES = (*sorted(LOSSES), *sorted(PAIRWISE_LOSSES))
SELECTABLE = (
    "loss",
    *(
        name
        for name, metric in PAIRWISE_METRICS.items()
        if name in METRICS and METRICS[name].higher_is_better == metric.higher_is_better
    ),
)
"""Validation metrics that may pick the best checkpoint: the pairwise metrics the trainer's
selection knows in the same direction (:func:`bayespref.metrics.is_better`), and the loss."""


@dataclasses.dataclass
class PairwiseDataConfig:
    format: str = field_help(
        "synthetic",
        "auto (from the first row's keys) | native | trl | multipref | helpsteer2 (JSON Lines "
        "files, docs/data.md) | hf (a Hugging Face dataset whose rows are in one of those "
        "schemas: {path: <save_to_disk folder, data file or dataset name>, split: train, "
        "schema: auto}) | synthetic (pairs with known P*, generated)",
    )
    train: str | dict | None = field_help(
        None,
        "training pairs: a file path; for hf a path or name, or {path, split, schema}; for "
        "synthetic {n, seed, min_annotators, max_annotators} (default n: 400, seed: the run's "
        "seed)",
    )
    valid: str | dict | None = field_help(
        None, "validation pairs (same forms); null: valid_fraction of train is held out"
    )
    valid_fraction: float = field_help(0.1, "fraction of train held out when valid is null")
    alpha: float = field_help(
        0.1, "prior smoothing over the K outcomes: p = (votes + alpha) / (n + K alpha)"
    )
    max_train_items: int | None = field_help(None, "random subsample of the training pairs")

    def __post_init__(self):
        if self.format not in PAIRWISE_DATA_FORMATS:
            raise ConfigError(
                f"data.format must be one of {list(PAIRWISE_DATA_FORMATS)}, got {self.format!r}"
            )
        synthetic = self.format == "synthetic"
        if self.format == HF_FORMAT and importlib.util.find_spec("datasets") is None:
            raise ConfigError(
                "data.format=hf reads Hugging Face datasets, and the `datasets` library is not "
                "installed: pip install 'bayespref[datasets]'"
            )
        if self.train is None and not synthetic:
            raise ConfigError(
                f"data.train: format {self.format!r} needs a file (data.train=<path>)"
            )
        for split in ("train", "valid"):
            spec: Any = getattr(self, split)
            if spec is None:
                continue
            if synthetic and not isinstance(spec, dict):
                raise ConfigError(
                    f"data.{split}={spec!r}: format synthetic generates its pairs and reads no "
                    f"file; give {{n: ..., seed: ...}}, or the file's format (data.format=auto)"
                )
            if synthetic:
                unknown = sorted(set(spec) - set(SYNTHETIC_OPTIONS))
                if unknown:
                    raise ConfigError(
                        f"data.{split}: unknown option(s) {unknown}; synthetic pairs take "
                        f"{list(SYNTHETIC_OPTIONS)}"
                    )
            elif self.format == HF_FORMAT:
                check_hf_spec(spec, f"data.{split}")
            elif not isinstance(spec, str):
                raise ConfigError(f"data.{split}: give a file path, got {spec!r}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction must be in [0, 1), got {self.valid_fraction}")
        if self.valid is None and self.valid_fraction == 0:
            raise ConfigError(
                "data.valid is null and data.valid_fraction=0: nothing to validate on"
            )
        if self.alpha < 0:
            raise ConfigError(f"data.alpha must be >= 0, got {self.alpha}")
        if self.max_train_items is not None and self.max_train_items < 1:
            raise ConfigError(f"data.max_train_items must be >= 1, got {self.max_train_items}")


def check_hf_spec(spec: Any, key: str) -> None:
    """An ``hf`` split: a path or dataset name, or ``{path, split, schema}`` with a path."""
    if isinstance(spec, str):
        return
    unknown = sorted(set(spec) - set(HF_OPTIONS)) if isinstance(spec, dict) else []
    if not isinstance(spec, dict) or unknown or not isinstance(spec.get("path"), str):
        raise ConfigError(
            f"{key}: give a dataset path or name, or {{path: ..., split: ..., schema: ...}} "
            f"(keys {list(HF_OPTIONS)}), got {spec!r}"
        )
    schema = spec.get("schema", "auto")
    if schema not in ("auto", *FORMATS):
        raise ConfigError(f"{key}.schema must be one of {['auto', *FORMATS]}, got {schema!r}")


@dataclasses.dataclass
class PairwiseLossConfig:
    name: str = field_help(
        "soft",
        "soft (soft BT: the vote share as target) | majority (TRL's BT on the most voted "
        "outcome) | margin (margin BT: -log sigmoid(r_win - r_lose - margin), the pair's "
        "margin or 0) | forward-kl | reverse-kl | jsd (the d-PM forms on the outcomes)",
    )
    normaliser: str = field_help(
        "batch", "class marginal of the d-PM losses over the batch's pairs: batch | ema"
    )
    ema_beta: float = field_help(0.99, "EMA decay when normaliser=ema")
    detach_target: bool = field_help(False, "stop the gradient through the posterior target r")

    def __post_init__(self):
        if self.name not in PAIRWISE_LOSS_NAMES:
            raise ConfigError(
                f"loss.name must be one of {list(PAIRWISE_LOSS_NAMES)}, got {self.name!r}"
            )
        if self.normaliser not in ("batch", "ema"):
            raise ConfigError(f"loss.normaliser must be batch|ema, got {self.normaliser!r}")
        if not 0.0 <= self.ema_beta < 1.0:
            raise ConfigError(f"loss.ema_beta must be in [0, 1), got {self.ema_beta}")


@dataclasses.dataclass
class PairwiseTrainConfig(RunConfig):
    """The reward-model recipe (``bayespref train-pairwise``)."""

    data: PairwiseDataConfig = dataclasses.field(default_factory=PairwiseDataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    peft: PeftConfig = dataclasses.field(default_factory=PeftConfig)
    loss: PairwiseLossConfig = dataclasses.field(default_factory=PairwiseLossConfig)
    optim: PaddedBatchesOptimConfig = dataclasses.field(default_factory=PaddedBatchesOptimConfig)
    ties: bool = field_help(
        True,
        "model the tie outcome: Rao-Kupper, P(A) = sigmoid(r_A - r_B - theta), theta >= 0 "
        "learned; false: Bradley-Terry over (A, B), a tie vote counting half a win each",
    )
    select_metric: str = field_help(
        "soft_ce", f"validation metric that picks the best checkpoint: {'|'.join(SELECTABLE)}"
    )
    eval_batch_size: int = field_help(64, "responses per validation forward pass")
    mixed_precision: str = field_help("no", "no | bf16 | fp16 (losses stay float32)")

    def __post_init__(self):
        super().__post_init__()
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no|bf16|fp16, got {self.mixed_precision!r}")
        if self.model.kind != "single":
            raise ConfigError(
                f"a reward model has one head: model.kind=single, got {self.model.kind}"
            )
        if self.model.freeze_encoder and self.peft.method != "none":
            raise ConfigError("model.freeze_encoder trains the head only: set peft.method=none")
        if self.select_metric not in SELECTABLE:
            raise ConfigError(
                f"select_metric must be one of {list(SELECTABLE)}, got {self.select_metric!r}"
            )
        if self.eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {self.eval_batch_size}")


def load_pairwise_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> PairwiseTrainConfig:
    """The reward-model recipe's config: :func:`load_yaml` of :class:`PairwiseTrainConfig`."""
    return load_yaml(PairwiseTrainConfig, path, overrides)
