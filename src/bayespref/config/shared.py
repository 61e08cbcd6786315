"""The sections every recipe shares, defined once: where a run goes and the trainer's policy
(:class:`RunConfig`), AdamW and its schedule (:class:`OptimConfig`), adapters
(:class:`PeftConfig`) and decoding (:class:`DecodingConfig`). A recipe gives a section its own
defaults with :func:`~bayespref.config.core.section_default`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

from .core import ConfigError, field_help


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
class PaddedBatchesOptimConfig(OptimConfig):
    """:class:`OptimConfig` plus length-sorted chunks for the forward pass (both encoder
    recipes: ``train`` and ``train-pairwise``)."""

    max_padding_waste: float | None = field_help(
        1.1,
        "forward each random micro-batch (a reward model: its 2B responses) in length-sorted "
        "chunks whose padded/real token ratio stays within this (the loss still sees the whole "
        "random batch); null: one padded pass",
    )
    head_lr: float | None = field_help(
        None,
        "peak learning rate of the head (the parameters after the encoder's pooling), on the "
        "same schedule; a fine-tuned encoder usually wants a much smaller lr than a fresh "
        "head; null: optim.lr for every parameter",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.head_lr is not None and not (math.isfinite(self.head_lr) and self.head_lr > 0):
            raise ConfigError(
                f"optim.head_lr must be a finite number > 0 or null, got {self.head_lr}"
            )
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
            raise ConfigError(
                f"peft.method must be one of {'|'.join(PEFT_METHODS)}, got {self.method!r}"
            )
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

    RENAMED_KEYS: ClassVar[dict[str, str]] = {
        "cache": "moved: use candidates=<path> (top level of the calibration config)",
    }

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
        # the run directory and every folder above it must be folders (or not exist yet)
        for folder in (self.run_dir, *self.run_dir.parents):
            if folder.exists() or folder.is_symlink():
                if not folder.is_dir():
                    key = "name" if folder == self.run_dir else "output_dir"
                    raise ConfigError(
                        f"{key}: {folder} exists and is not a folder; choose another output_dir "
                        f"(runs go to <output_dir>/<name>/)"
                    )
                break

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name
