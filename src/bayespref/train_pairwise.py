"""Train a reward model on pairs with several votes each: the recipe reads top to bottom in
:func:`train_pairwise`.

setup (seed, pairs, reward model) -> the shared trainer (:mod:`bayespref.trainer`: run
directory, resume, loop, evaluation, checkpoints, ``metrics.jsonl``, best model) -> summary.
A step's micro-batch is a seeded random sample of pairs; its 2B responses (A's, then B's) go
through the model in length-sorted chunks, and the loss sees the batch's outcome logits
``log P(A, B[, tie])`` (:meth:`bayespref.reward_model.RewardModel.outcome_logits`): the
registry losses unchanged, the batch normaliser over the batch's pairs; or margin BT on
``r_A - r_B``. One process (the d-PM batch marginal is not gathered across processes here).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .batching import forward_in_chunks
from .config import ConfigError
from .config.pairwise import PairwiseDataConfig, PairwiseTrainConfig
from .data.pairwise import (
    NO_WINNER,
    PairwiseDataset,
    load_pairwise,
    majority_outcome,
    outcome_shares,
    pair_winner,
    smoothed_outcome_prior,
)
from .data.synthetic.pairs import make_synthetic_pairs
from .features import compute_features
from .losses import LOSSES, MarginalEMA
from .model import collate_encoded, encode_pair
from .pairwise_losses import margin_bt
from .pairwise_metrics import compute_pairwise_metrics
from .reward_model import RewardModel
from .trainer import Backward, Trainer
from .trainer_utils import ModelFolderCheckpoints, make_accelerator, seed_everything

logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_PAIRS = 400


@dataclasses.dataclass
class PairwiseTrainResult:
    run_dir: Path
    best_metrics: dict | None
    final_metrics: dict | None
    steps: int
    baseline_metrics: dict | None = None  # the train vote share as a constant prediction


# -- data ----------------------------------------------------------------------------------


def load_pairwise_splits(
    data: PairwiseDataConfig, seed: int
) -> tuple[PairwiseDataset, PairwiseDataset]:
    """Training and validation pairs as ``data`` says (a held-out share of train when
    ``data.valid`` is null; a seeded subsample with ``max_train_items``)."""

    def read(spec: Any, split: str) -> PairwiseDataset:
        if data.format == "synthetic":
            options = {"n": DEFAULT_SYNTHETIC_PAIRS, "seed": seed + (split == "valid"), **spec}
            return make_synthetic_pairs(**options)
        return load_pairwise(spec, data.format)

    train = read(data.train or {}, "train")
    if data.valid is not None:
        valid = read(data.valid, "valid")
    else:
        order = np.random.default_rng([seed, 0x5A1]).permutation(len(train))
        held = int(round(data.valid_fraction * len(train)))
        if held < 1 or held >= len(train):
            raise ConfigError(
                f"data.valid_fraction={data.valid_fraction} of {len(train)} pairs leaves "
                f"{held} to validate on: give data.valid or change the fraction"
            )
        valid = PairwiseDataset([train.examples[i] for i in order[:held]], f"{train.name}-valid")
        train = PairwiseDataset([train.examples[i] for i in order[held:]], train.name)
    if data.max_train_items is not None and data.max_train_items < len(train):
        keep = np.random.default_rng([seed, 0x5A2]).permutation(len(train))
        keep = np.sort(keep[: data.max_train_items])
        train = PairwiseDataset([train.examples[i] for i in keep], train.name)
    return train, valid


@dataclasses.dataclass
class EncodedPairs:
    """A split ready for the model: each pair's two encoded (context, response) items (or
    their pooled features, ``(N, 2, H)``, with a frozen encoder), vote counts, the smoothed
    outcome prior, the majority outcome, the winner and the margin (0 when not given)."""

    ids: list[str]
    items_a: list[dict[str, list[int]]]
    items_b: list[dict[str, list[int]]]
    counts: np.ndarray  # (N, 3)
    prior: np.ndarray  # (N, K)
    labels: np.ndarray  # (N,) majority outcome; NO_WINNER where a 2-outcome pair is split
    winner: np.ndarray  # (N,) 0 A, 1 B, NO_WINNER
    margin: np.ndarray  # (N,)
    truth: np.ndarray | None  # (N, 3) P* on synthetic pairs
    pad_token_id: int
    features: np.ndarray | None = None  # (N, 2, H)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: np.ndarray) -> dict[str, Tensor]:
        """Rows A[indices] then B[indices] (2B) and the pairs' targets (B)."""
        if self.features is not None:
            rows = np.concatenate([self.features[indices, 0], self.features[indices, 1]])
            batch = {"features": torch.as_tensor(rows)}
        else:
            items = [self.items_a[i] for i in indices] + [self.items_b[i] for i in indices]
            batch = collate_encoded(items, self.pad_token_id)
        batch["prior"] = torch.as_tensor(self.prior[indices], dtype=torch.float32)
        batch["labels"] = torch.as_tensor(self.labels[indices])
        batch["winner"] = torch.as_tensor(self.winner[indices])
        batch["margin"] = torch.as_tensor(self.margin[indices], dtype=torch.float32)
        return batch


def encode_pairs_split(
    model: RewardModel,
    data: PairwiseDataset,
    alpha: float,
    cache_dir: str | None = None,
    progress: bool | None = None,
) -> EncodedPairs:
    """Tokenise a split's pairs (and pool them once, for a frozen encoder)."""
    tokenizer, max_length = model.tokenizer, model.config.max_length
    items_a = [encode_pair(tokenizer, e.context, e.response_a, max_length) for e in data.examples]
    items_b = [encode_pair(tokenizer, e.context, e.response_b, max_length) for e in data.examples]
    counts = data.counts()
    truths = [e.true_distribution for e in data.examples if e.true_distribution is not None]
    pad = tokenizer.pad_token_id or 0
    encoded = EncodedPairs(
        ids=[e.id for e in data.examples],
        items_a=items_a,
        items_b=items_b,
        counts=counts,
        prior=smoothed_outcome_prior(counts, model.ties, alpha),
        labels=majority_outcome(counts, model.ties),
        winner=pair_winner(counts),
        margin=np.array([e.margin or 0.0 for e in data.examples]),
        truth=np.stack(truths) if truths and len(truths) == len(data) else None,  # P* known
        pad_token_id=pad,
    )
    if model.head_only:
        pooled = compute_features(
            model, items_a + items_b, pad, cache_dir=cache_dir, progress=progress
        )
        encoded.features = np.stack([pooled[: len(items_a)], pooled[len(items_a) :]], axis=1)
    return encoded


# -- the task -------------------------------------------------------------------------------


def pair_losses(
    model: RewardModel,
    rewards: Tensor,
    batch: dict[str, Tensor],
    loss_config: Any,
    ema: MarginalEMA | None,
    training: bool,
) -> tuple[Tensor, Tensor]:
    """Per-pair losses (B,) and their weights (B,): 0 for a pair a majority loss cannot use
    (margin BT, or majority BT without ties, on a pair with equal votes for A and B)."""
    device = rewards.device
    half = rewards.shape[0] // 2
    reward_a, reward_b = rewards[:half, 0].float(), rewards[half:, 0].float()
    if loss_config.name == "margin":
        winner = batch["winner"].to(device)
        losses = margin_bt(reward_a - reward_b, winner, batch["margin"].to(device))
        return losses, (winner != NO_WINNER).float()
    logits = model.outcome_logits(reward_a, reward_b)  # (B, K)
    labels = batch["labels"].to(device)
    options: dict[str, Any] = {
        "normaliser": loss_config.normaliser,
        "detach_target": loss_config.detach_target,
    }
    if loss_config.normaliser == "ema":
        options.update(ema=ema, update_ema=training)
    losses = LOSSES[loss_config.name](
        logits, batch["prior"].to(device), labels=labels.clamp_min(0), **options
    )
    if loss_config.name == "majority":
        return losses, (labels != NO_WINNER).float()
    return losses, torch.ones_like(losses)


def weighted_mean(losses: Tensor, weights: Tensor) -> Tensor:
    """Mean over the pairs with weight 1 (0 with a gradient path when there are none)."""
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)


class PairwiseTask(ModelFolderCheckpoints):
    """The reward-model recipe's side of :class:`bayespref.trainer.Task`."""

    eval_split = "valid"

    def __init__(
        self,
        config: PairwiseTrainConfig,
        train_split: EncodedPairs,
        valid_split: EncodedPairs,
        ema: MarginalEMA | None,
        accelerator: Any,
    ):
        super().__init__(config, train_split, valid_split, ema, accelerator)

    def forward_backward(
        self, model: Any, micro_batches: list[np.ndarray], backward: Backward
    ) -> dict[str, float]:
        """One micro-batch at a time: its 2B responses forwarded in length-sorted chunks,
        then the mean loss over its pairs (divided by the number of micro-batches)."""
        device = self.accelerator.device
        reward_model = self.accelerator.unwrap_model(model)
        logged = 0.0
        for indices in micro_batches:
            batch = self.train_split.batch(indices)
            with self.accelerator.autocast():
                rewards = forward_in_chunks(
                    model, batch, device, self.config.optim.max_padding_waste
                )
            losses, weights = pair_losses(
                reward_model, rewards, batch, self.config.loss, self.ema, training=True
            )
            loss = weighted_mean(losses, weights) / len(micro_batches)
            backward(loss)
            logged += float(loss.detach())
        return {"loss": logged}

    @torch.no_grad()
    def rewards_of(self, model: RewardModel, split: EncodedPairs) -> Tensor:
        """Rewards (2N,) of a split's responses, A's then B's, in eval mode."""
        was_training = model.training
        model.eval()
        device = self.accelerator.device
        order = np.arange(len(split))
        pieces = []
        try:
            for start in range(0, len(split), self.config.eval_batch_size):
                batch = split.batch(order[start : start + self.config.eval_batch_size])
                rewards = forward_in_chunks(
                    model, batch, device, self.config.optim.max_padding_waste
                )
                half = rewards.shape[0] // 2
                pieces.append((rewards[:half, 0].float(), rewards[half:, 0].float()))
        finally:
            model.train(was_training)
        return torch.cat([torch.cat([a for a, _ in pieces]), torch.cat([b for _, b in pieces])])

    @torch.no_grad()
    def evaluate(self, model: RewardModel) -> dict[str, float]:
        """Pairwise metrics of the validation pairs, the loss in batches of
        ``optim.batch_size`` (batch-normalised losses compare only at equal batch size), theta."""
        split = self.valid_split
        rewards = self.rewards_of(model, split)
        n = len(split)
        p = model.outcome_logits(rewards[:n], rewards[n:]).exp().double().cpu().numpy()
        results = compute_pairwise_metrics(p, split.counts, split.truth)
        total, weight = 0.0, 0.0
        size = self.config.optim.batch_size
        for start in range(0, n, size):
            rows = np.arange(start, min(start + size, n))
            batch = split.batch(rows)
            pair_rewards = torch.cat([rewards[rows], rewards[n + rows]]).unsqueeze(1)
            losses, weights = pair_losses(
                model, pair_rewards, batch, self.config.loss, self.ema, training=False
            )
            total += float((losses * weights).sum())
            weight += float(weights.sum())
        results["loss"] = total / max(weight, 1.0)
        if model.theta is not None:
            results["theta"] = model.theta.item()
        return results

    def item_ids(self, indices: np.ndarray) -> list:
        return [self.train_split.ids[i] for i in indices]


# -- the recipe -----------------------------------------------------------------------------


def train_pairwise(config: PairwiseTrainConfig, resume: bool = False) -> PairwiseTrainResult:
    """Train a reward model as configured; outputs go to ``config.run_dir`` (as ``train``:
    ``config.yaml``, ``metrics.jsonl``, ``checkpoint/best``, ``checkpoint/step-N``,
    ``summary.json``). ``resume=True`` continues from the newest intact checkpoint."""
    seed_everything(config.seed)
    accelerator = make_accelerator(config.mixed_precision)
    if accelerator.num_processes > 1:
        raise ConfigError("train-pairwise runs on one process (launch it without accelerate)")
    trainer = Trainer(
        config,
        config.optim,
        accelerator,
        resume=resume,
        command="bayespref train-pairwise",
        select_metric=config.select_metric,
    )
    with trainer:
        train_set, valid_set = load_pairwise_splits(config.data, config.seed)
        model = RewardModel.build(config.model, config.ties, config.peft)
        bars = None if config.progress else False
        cache = config.model.feature_cache
        train_split = encode_pairs_split(model, train_set, config.data.alpha, cache, bars)
        valid_split = encode_pairs_split(model, valid_set, config.data.alpha, cache, bars)
        ema = None
        if config.loss.normaliser == "ema":
            ema = MarginalEMA(3 if config.ties else 2, beta=config.loss.ema_beta)
        task = PairwiseTask(config, train_split, valid_split, ema, accelerator)
        outcome = trainer.fit(model, task)

    state = outcome.state
    share = outcome_shares(train_split.counts, config.ties).mean(axis=0)
    constant = np.tile(share, (len(valid_split), 1))
    baseline = compute_pairwise_metrics(constant, valid_split.counts, valid_split.truth)
    summary = {
        "best_step": state.best_step,
        "select_metric": config.select_metric,
        "best": state.best_metrics,
        "final": outcome.last_eval,
        "train_mean_predictor": baseline,
        "steps": state.step,
        "train_pairs": len(train_split),
        "valid_pairs": len(valid_split),
    }
    (config.run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return PairwiseTrainResult(
        config.run_dir, state.best_metrics, outcome.last_eval, state.step, baseline
    )
