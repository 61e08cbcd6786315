"""Parameter-efficient fine-tuning: one place that wraps a model with ``peft`` adapters.

Both recipes read the same :class:`~bayespref.config.PeftConfig` section: the preference model
wraps its encoder (``task="feature-extraction"``: LoRA or prefix tuning), calibration wraps the
generator (``task="causal-lm"``: LoRA, merged into the saved model).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from transformers import PreTrainedModel

from .config import ConfigError, PeftConfig

TASKS = ("feature-extraction", "causal-lm")


def wrap_peft(model: torch.nn.Module, peft: PeftConfig, task: str) -> torch.nn.Module:
    """``model`` wrapped with the configured adapters (``model`` itself for ``method=none``)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if peft.method == "none":
        return model
    from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model

    task_type = TaskType.FEATURE_EXTRACTION if task == "feature-extraction" else TaskType.CAUSAL_LM
    adapter: Any
    if peft.method == "lora":
        adapter = LoraConfig(
            r=peft.r,
            lora_alpha=peft.alpha,
            lora_dropout=peft.dropout,
            target_modules=peft.target_modules,
            task_type=task_type,
        )
    elif peft.method == "prefix" and task == "feature-extraction":
        adapter = PrefixTuningConfig(
            num_virtual_tokens=peft.num_virtual_tokens, task_type=task_type
        )
    else:
        raise ConfigError(f"peft.method={peft.method} is not available for a {task} model")
    return get_peft_model(model, adapter)


def base_model(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model under a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    return cast(PreTrainedModel, get_base() if callable(get_base) else model)
