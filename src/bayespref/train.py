"""Train a preference model: the recipe reads top to bottom in :func:`train`.

setup (seed, data, model) -> the shared trainer (:mod:`bayespref.trainer`: run directory,
resume, loop, evaluation, checkpoints) -> summary and curves. Runs on one CPU or many GPUs
under ``accelerate launch``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.nn.functional import all_gather

from . import metrics as metrics_lib
from .annotator_prior import annotator_mixture_prior, cross_fitted_crowd
from .annotators import AnnotatorVocabulary, annotator_objective
from .batching import forward_in_chunks
from .config import LossConfig, TrainConfig
from .data.schema import AnnotatedDataset
from .data.splits import load_train_valid, training_prior
from .evaluation import (
    EncodedSplit,
    annotator_objective_on_split,
    constant_predictor_metrics,
    encode_split,
    evaluate_split,
)
from .features import compute_features
from .losses import LOSSES, MarginalEMA
from .model import PreferenceModel
from .trainer import Backward, Trainer
from .trainer_utils import ModelFolderCheckpoints, make_accelerator, read_jsonl, seed_everything

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    best_metrics: dict | None
    final_metrics: dict | None
    steps: int
    baseline_metrics: dict | None = None  # the constant train-mean predictor on valid


def global_batch_gather(accelerator: Any):
    """``(B_local, C) -> (B_global, C)`` over all processes, differentiable; None alone.

    The batch normaliser must see the global batch (METHOD section 2). The gather's backward
    sends each shard's gradient back to the process that owns it (summed over processes), so
    with DDP's gradient averaging the update equals one process on the global batch.
    """
    if accelerator.num_processes == 1:
        return None
    # A group of its own: the gather's backward runs a collective inside autograd while DDP's
    # bucket all-reduces run from autograd hooks; on one group their order could differ
    # between processes and mix up the data (seen with gloo).
    group = dist.new_group()

    def gather(local: Tensor) -> Tensor:
        return torch.cat(all_gather(local.contiguous(), group=group), dim=0)

    return gather


def make_objective(loss_config: LossConfig, ema: MarginalEMA | None, training: bool, gather=None):
    """``objective(logits, prior, labels) -> (B,)`` for the configured loss.

    Every registry loss takes the same options and ignores those it does not use; the EMA is
    updated only in training; ``gather`` (training under data parallelism) widens the class
    marginal to the global batch.
    """
    loss_fn = LOSSES[loss_config.name]
    options: dict = {
        "normaliser": loss_config.normaliser,
        "detach_target": loss_config.detach_target,
    }
    if gather is not None:
        options["gather"] = gather
    if loss_config.normaliser == "ema":
        options.update(ema=ema, update_ema=training)

    def objective(logits: Tensor, prior: Tensor, labels: Tensor) -> Tensor:
        return loss_fn(logits, prior, labels=labels, **options)

    return objective


class PreferenceTask(ModelFolderCheckpoints):
    """The preference-model recipe's side of :class:`bayespref.trainer.Task`: random
    micro-batches of the encoded training split, the configured loss, validation metrics."""

    eval_split = "valid"

    def __init__(
        self,
        config: TrainConfig,
        train_split: EncodedSplit,
        valid_split: EncodedSplit,
        ema: MarginalEMA | None,
        accelerator: Any,
    ):
        super().__init__(config, train_split, valid_split, ema, accelerator)
        # bars of feature encoding and evaluation: on a terminal (None), never with progress=false
        self.progress = None if config.progress and accelerator.is_main_process else False
        self.annotator_aware = config.model.annotator_aware  # loss: annotator_objective
        if not self.annotator_aware:
            gather = global_batch_gather(accelerator)
            self.train_objective = make_objective(config.loss, ema, training=True, gather=gather)
            self.eval_objective = make_objective(config.loss, ema, training=False)

    def forward_backward(
        self, model: torch.nn.Module, micro_batches: list[np.ndarray], backward: Backward
    ) -> dict[str, float]:
        """The step's random micro-batches, pooled (``optim.pool_micro_batches``) or one at a
        time: a pool's items are forwarded together in length-sorted chunks (large chunks run
        at the hardware's pace), then each micro-batch's loss is computed from its own rows of
        the pooled logits, so every normaliser still sees one seeded random micro-batch. One
        backward of the summed losses gives the gradients of backpropagating them one by one
        (to float rounding); the pool keeps all its activations until then."""
        accumulation = len(micro_batches)
        pooled = self.config.optim.pool_micro_batches
        groups = [micro_batches] if pooled else [[indices] for indices in micro_batches]
        device = self.accelerator.device
        waste = self.config.optim.max_padding_waste
        logged = 0.0
        for group in groups:
            batch = self.train_split.batch(np.concatenate(group))
            with self.accelerator.autocast():  # random items, forwarded in length-sorted chunks
                if self.annotator_aware:  # per item (sum of B,): one padded pass
                    per_item = annotator_objective(model, batch, device)
                else:
                    logits = forward_in_chunks(model, batch, device, waste)  # (sum of B, C)
            loss = torch.zeros((), device=device)
            start = 0
            for indices in group:  # each micro-batch's loss over its own rows: (B,)
                rows = slice(start, start + len(indices))
                start += len(indices)
                if self.annotator_aware:
                    loss = loss + per_item[rows].mean() / accumulation
                    continue
                losses = self.train_objective(
                    logits[rows].float(),
                    batch["prior"][rows].to(device),
                    batch["labels"][rows].to(device),
                )
                loss = loss + losses.mean() / accumulation
            backward(loss)
            logged += float(loss.detach())
        return {"loss": logged}

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        results, _ = evaluate_split(
            model,
            self.valid_split,
            batch_size=self.config.eval_batch_size,
            objective=None if self.annotator_aware else self.eval_objective,
            objective_batch_size=self.config.optim.batch_size,
            progress=self.progress,
        )
        if self.annotator_aware:
            batch_size = self.config.eval_batch_size
            results["loss"] = annotator_objective_on_split(model, self.valid_split, batch_size)
        return results

    def item_ids(self, indices: np.ndarray) -> list:
        return [self.train_split.ids[i] for i in indices]


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train a preference model as configured; outputs go to ``config.run_dir``.

    With ``resume=True`` the newest intact checkpoint in the run directory is loaded and the
    run continues from it, ending with the same weights as an uninterrupted run.
    """
    seed_everything(config.seed)
    accelerator = make_accelerator(config.mixed_precision)
    trainer = Trainer(
        config,
        config.optim,
        accelerator,
        resume=resume,
        command="bayespref train",
        select_metric=config.select_metric,
    )
    with trainer:
        # ---- data and model
        train_set, valid_set = load_train_valid(config.data, config.seed)
        vocabulary = None
        if config.model.annotator_aware:
            vocabulary = AnnotatorVocabulary.from_dataset(
                train_set, config.model.min_annotator_labels
            )
        model = PreferenceModel.build(config.model, train_set.label_space, config.peft, vocabulary)
        prior = training_prior(train_set, config.data)
        bars = None if config.progress and accelerator.is_main_process else False
        train_split = encode_split(model, train_set, config.data.alpha, "train", prior, bars)
        valid_split = encode_split(model, valid_set, config.data.alpha, "valid", progress=bars)
        if config.data.prior == "annotator-mixture":
            train_split.prior = mixture_prior(model, train_split, train_set, config, bars)
        if accelerator.is_main_process:
            write_data_stats(config.run_dir, train_split, valid_split, train_set, valid_set)
        ema = None
        if config.loss.normaliser == "ema":
            ema = MarginalEMA(train_set.num_classes, beta=config.loss.ema_beta)

        # ---- train
        task = PreferenceTask(config, train_split, valid_split, ema, accelerator)
        outcome = trainer.fit(model, task)

    # ---- finish
    state = outcome.state
    baseline = constant_predictor_metrics(train_split.empirical, valid_split)
    if accelerator.is_main_process:
        run_dir = config.run_dir
        plot_curves(
            run_dir / "metrics.jsonl",
            run_dir / "curves.png",
            config.loss.name,
            config.select_metric,
        )
        summary = {
            "best_step": state.best_step,
            "select_metric": config.select_metric,
            "best": state.best_metrics,
            "final": outcome.last_eval,
            "train_mean_predictor": baseline,
            "steps": state.step,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return TrainResult(config.run_dir, state.best_metrics, outcome.last_eval, state.step, baseline)


def mixture_prior(
    model: PreferenceModel,
    split: EncodedSplit,
    dataset: AnnotatedDataset,
    config: TrainConfig,
    progress: bool | None,
) -> np.ndarray:
    """``data.prior=annotator-mixture`` (:mod:`bayespref.annotator_prior`), (N, C) float32:
    the counts blended with the crowd distribution of cross-fitted annotator heads, fitted on
    the pooled features of the encoder as it is before training (the frozen encoder's cached
    features when it stays frozen)."""
    features = split.features
    if features is None:
        features = compute_features(
            model,
            split.items,
            split.pad_token_id,
            cache_dir=model.config.feature_cache,
            progress=progress,
        )
    crowd = cross_fitted_crowd(features, dataset, config.model.min_annotator_labels, config.seed)
    prior = annotator_mixture_prior(dataset.counts(), crowd, config.data.prior_strength)
    logger.info(
        "annotator-mixture prior: %d items, kappa %.3g, mean |p - counts prior| %.4f",
        len(prior),
        config.data.prior_strength,
        float(np.abs(prior - split.prior).sum(axis=1).mean()),
    )
    return prior.astype(np.float32)


def write_data_stats(
    run_dir: Path,
    train_split: EncodedSplit,
    valid_split: EncodedSplit,
    train_set: AnnotatedDataset,
    valid_set: AnnotatedDataset,
) -> None:
    """``data_stats.json``: label space, split sizes, load reports, the training label mean."""
    stats = {
        "label_space": train_set.label_space.to_dict(),
        "train_items": len(train_split),
        "valid_items": len(valid_split),
        "train_mean_distribution": train_split.empirical.mean(axis=0).tolist(),
        "train_load": train_set.report.to_dict() if train_set.report else None,
        "valid_load": valid_set.report.to_dict() if valid_set.report else None,
    }
    (run_dir / "data_stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")


def plot_curves(metrics_file: Path, out: Path, loss_name: str, select_metric: str) -> None:
    """Training/validation objective and the selection metric against optimiser steps."""
    rows = read_jsonl(metrics_file)
    train_rows = [r for r in rows if r["split"] == "train"]
    valid_rows = [r for r in rows if r["split"] == "valid"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    if train_rows:
        steps = np.array([r["step"] for r in train_rows])
        losses = np.array([r["loss"] for r in train_rows])
        window = max(1, len(losses) // 25)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps, losses, color="C0", alpha=0.25, lw=0.8)
        ax.plot(steps[window - 1 :], smooth, color="C0", label="train (smoothed)")
    if valid_rows and "loss" in valid_rows[0]:
        ax.plot(
            [r["step"] for r in valid_rows],
            [r["loss"] for r in valid_rows],
            "o-",
            color="C1",
            label="valid (same batch size)",
        )
    ax.set(xlabel="optimiser step", ylabel=f"{loss_name} objective", title="objective")
    ax.legend()
    ax = axes[1]
    shown = [select_metric] + [m for m in ("soft_ce", "jsd") if m != select_metric]
    for i, name in enumerate(shown):
        if valid_rows and name in valid_rows[0]:
            spec = metrics_lib.METRICS.get(name)
            arrow = (
                ""
                if spec is None or spec.higher_is_better is None
                else (" (higher is better)" if spec.higher_is_better else " (lower is better)")
            )
            ax.plot(
                [r["step"] for r in valid_rows],
                [r[name] for r in valid_rows],
                "o-",
                color=f"C{i + 2}",
                label=name + arrow,
            )
    if valid_rows and "entropy_floor" in valid_rows[0]:
        ax.axhline(valid_rows[0]["entropy_floor"], ls="--", color="gray", label="H(t) floor")
    ax.set(xlabel="optimiser step", title="validation metrics")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
