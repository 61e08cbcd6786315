"""Small pure pieces of training, shared by the trainer and the recipes.

The schedule (:func:`lr_at`), the seeded random micro-batches (:func:`micro_batch_indices`),
seeding, AdamW parameter groups, best-checkpoint comparison, the accelerator, the
``metrics.jsonl`` records, and the recipes' model-folder checkpoints
(:class:`ModelFolderCheckpoints`).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator, DistributedDataParallelKwargs

from . import metrics as metrics_lib
from .losses import MarginalEMA


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warmup to ``peak_lr`` over ``warmup_steps``, then linear decay to 0 at
    ``total_steps``. Counted in OPTIMISER steps (the reference code counted micro-batches while
    stepping per optimiser step, so its decay only got a fraction of the way)."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    remaining = total_steps - step
    return peak_lr * max(0.0, remaining / max(1, total_steps - warmup_steps))


def micro_batch_indices(
    micro_index: int, num_items: int, batch_size: int, world_size: int, rank: int, seed: int
) -> np.ndarray:
    """Indices of global micro-batch ``micro_index`` for process ``rank``.

    Every epoch is a fresh seeded permutation cut into global batches of
    ``batch_size * world_size`` (a partial last batch is dropped: a tiny batch would give the
    batch normaliser a noisy marginal). Random, never length-sorted: the batch normaliser must
    see an unbiased sample (METHOD section 3). Stateless, so resuming needs only the index.
    """
    global_batch = batch_size * world_size
    per_epoch = num_items // global_batch
    if per_epoch == 0:
        raise ValueError(
            f"{num_items} training items are fewer than one global batch of {global_batch}"
        )
    epoch, position = divmod(micro_index, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_items)
    start = position * global_batch + rank * batch_size
    return order[start : start + batch_size]


def make_accelerator(mixed_precision: str = "no", cpu: bool = False) -> Accelerator:
    """The ``accelerate.Accelerator`` of a recipe: one CPU, one GPU, or many under
    ``accelerate launch`` / ``torchrun``.

    Under torchrun on a machine without CUDA, accelerate only sets up the (gloo) process group
    when told to run on the CPU; alone, it picks the device itself. DDP does not broadcast
    buffers before each forward: a micro-batch is forwarded in length-sorted chunks whose
    number differs between processes, so a per-forward broadcast (a collective) would leave
    them waiting on each other; the encoders' buffers (position ids) are constants anyway.
    """
    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        mixed_precision=mixed_precision,
        cpu=cpu or (multi_process and not torch.cuda.is_available()),
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch: called once, at a recipe's entry point."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def param_groups(
    model: torch.nn.Module, weight_decay: float, head_lr_scale: float | None = None
) -> list[dict]:
    """AdamW groups: no weight decay on biases and normalisation weights (1-D parameters);
    frozen parameters are left out. With ``head_lr_scale``, the head's parameters (names
    starting ``head.``) get groups of their own whose ``lr_scale`` multiplies the scheduled
    learning rate (the trainer reads it), the rest ``lr_scale`` 1; empty groups are left out."""
    buckets: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            in_head = head_lr_scale is not None and name.startswith("head.")
            buckets.setdefault((in_head, param.ndim < 2), []).append(param)
    groups = []
    for in_head in (False, True):
        for no_decay in (False, True):
            params = buckets.get((in_head, no_decay), [])
            if head_lr_scale is None:  # the two groups of old, even when one is empty
                if in_head:
                    continue
            elif not params:
                continue
            group: dict = {"params": params, "weight_decay": 0.0 if no_decay else weight_decay}
            if head_lr_scale is not None:
                group["lr_scale"] = head_lr_scale if in_head else 1.0
            groups.append(group)
    return groups


def is_improvement(metric: str, value: float | None, best: float | None) -> bool:
    """Whether ``value`` beats ``best`` for the selection metric, in that metric's direction.

    No threshold: the first evaluation always makes a best checkpoint (the reference code
    saved one only when the validation loss fell below 1, which a KL objective may never do).
    ``loss`` (the training objective) is lower-is-better; the rest declare their direction.
    """
    if metric == "loss":
        if value is None or value != value:
            return False
        return best is None or best != best or value < best
    return metrics_lib.is_better(metric, value, best)


def append_jsonl(path: Path, record: dict) -> None:
    """Append one JSON line to ``path``."""
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    """Every record of a JSON-lines file (an empty list if there is none)."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop the records of steps after ``last_step`` (written after the resumed checkpoint),
    so that no step is recorded twice."""
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path) if r["step"] <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
    tmp.replace(path)


def log_tensorboard(writer: Any, split: str, record: dict) -> None:
    """Write a metrics record's numbers as TensorBoard scalars under ``<split>/``."""
    for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)) and value == value:
            writer.add_scalar(f"{split}/{key}", value, record["step"])


class FolderModel(Protocol):
    """A model that saves into a folder and loads its weights file back (both encoder models)."""

    def save(self, folder: str | os.PathLike) -> None: ...

    def load_weights(self, path: str | os.PathLike) -> None: ...


class ModelFolderCheckpoints:
    """The checkpoint side of a recipe's :class:`bayespref.trainer.Task` for a model that saves
    into a folder: a training checkpoint keeps the model in ``model/``, the best model is the
    folder itself; the task's state is its :class:`~bayespref.losses.MarginalEMA` (or None).
    Both recipes mix this in (they never import each other), and share its constructor: the
    run's config, the encoded training and validation splits, the EMA and the accelerator."""

    ema: MarginalEMA | None

    def __init__(
        self,
        config: Any,
        train_split: Any,
        valid_split: Any,
        ema: MarginalEMA | None,
        accelerator: Any,
    ):
        self.config = config
        self.train_split = train_split
        self.valid_split = valid_split
        self.ema = ema
        self.accelerator = accelerator
        self.num_items = len(train_split)
        self.headline_metrics: tuple[str, ...] = (
            "loss",
            config.select_metric,
            "soft_ce",
            "accuracy",
        )

    def save_weights(self, model: FolderModel, folder: Path) -> None:
        model.save(folder / "model")

    def load_weights(self, model: FolderModel, folder: Path) -> None:
        model.load_weights(folder / "model" / "model.safetensors")

    def save_best(self, model: FolderModel, folder: Path) -> None:
        model.save(folder)

    def state_dict(self) -> dict | None:
        return self.ema.state_dict() if self.ema is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.ema is not None and state is not None:
            self.ema.load_state_dict(state)
