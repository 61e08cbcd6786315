"""Evaluate a preference model against the annotators (METHOD section 6).

Besides the metrics themselves this module holds the pieces training and evaluation share:
turning an :class:`AnnotatedDataset` into encoded examples with priors, empirical
distributions and majority labels, and running a model over them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from . import metrics as metrics_lib
from .annotator_metrics import class_ranks, perspectivist_metrics
from .annotators import annotator_objective, pad_rows
from .config import load_config
from .data.priors import empirical_distribution, majority_label, smoothed_prior
from .data.schema import AnnotatedDataset, require_same_classes
from .data.splits import load_split, load_train_valid
from .features import compute_features
from .model import PreferenceModel, collate_encoded, encode_pair

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class EncodedSplit:
    """A dataset ready for the model: token ids plus every per-item target.

    ``prior``: smoothed annotator distribution p (N, C), the training target;
    ``empirical``: unsmoothed t (N, C), the evaluation target; ``labels``: majority (N,).
    Where the data name annotators: ``annotator_ids`` and ``annotator_labels`` per item (an
    item without ids: empty lists), ``annotator_slots`` the model's slots for them
    (annotator-aware models only); ``class_ranks`` the ordinal rank of each class (None when
    utilities tie).
    """

    name: str
    ids: list[str]
    items: list[dict[str, list[int]]]
    prior: np.ndarray
    empirical: np.ndarray
    labels: np.ndarray
    true_distribution: np.ndarray | None
    pad_token_id: int
    features: np.ndarray | None = None  # (N, H) pooled features of a frozen encoder
    annotator_ids: list[list[str]] | None = None
    annotator_labels: list[list[int]] | None = None
    annotator_slots: list[list[int]] | None = None
    class_ranks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, indices) -> dict[str, Tensor]:
        """Model inputs for ``indices`` plus ``prior`` (B, C) and ``labels`` (B,).

        The inputs are token ids and masks, or ``features`` (B, H) when the split carries
        frozen-encoder features.
        """
        if self.features is not None:
            batch = {"features": torch.as_tensor(self.features[indices])}
        else:
            batch = collate_encoded([self.items[i] for i in indices], self.pad_token_id)
        batch["prior"] = torch.as_tensor(self.prior[indices], dtype=torch.float32)
        batch["labels"] = torch.as_tensor(self.labels[indices], dtype=torch.long)
        if self.annotator_slots is not None and self.annotator_labels is not None:
            batch["annotators"] = pad_rows([self.annotator_slots[i] for i in indices])  # (B, K)
            batch["annotator_labels"] = pad_rows([self.annotator_labels[i] for i in indices])
        return batch

    def annotations(self) -> tuple[np.ndarray, np.ndarray]:
        """Every (item, label) annotation, flattened: ``item_of`` (M,), ``labels`` (M,)."""
        rows = self.annotator_labels or []
        item_of = np.repeat(np.arange(len(rows)), [len(r) for r in rows]).astype(np.int64)
        labels = np.asarray([lab for r in rows for lab in r], dtype=np.int64)
        return item_of, labels


def encode_split(
    model: PreferenceModel,
    dataset: AnnotatedDataset,
    alpha: float,
    name: str | None = None,
    prior: np.ndarray | None = None,
    progress: bool | None = None,
) -> EncodedSplit:
    """Encode ``dataset``; ``prior`` (N, C) replaces the smoothed count prior when given
    (e.g. a Dawid-Skene prior); the evaluation targets always come from the raw counts.

    A model with a frozen encoder gets each item's pooled features computed here, once (and
    read from ``model.config.feature_cache`` when set).
    """
    counts = dataset.counts()
    if prior is not None and np.shape(prior) != counts.shape:
        raise ValueError(f"prior must have shape {counts.shape}, got {np.shape(prior)}")
    space = dataset.label_space
    items = [
        encode_pair(model.tokenizer, ex.context, ex.response, model.config.max_length)
        for ex in dataset.examples
    ]
    pad_token_id = model.tokenizer.pad_token_id or 0
    features = None
    if model.head_only:
        features = compute_features(
            model, items, pad_token_id, cache_dir=model.config.feature_cache, progress=progress
        )
    annotated = any(ex.annotations for ex in dataset.examples)
    who = [[a for a, _ in ex.annotations or []] for ex in dataset.examples] if annotated else None
    vocabulary = getattr(model, "vocabulary", None)
    return EncodedSplit(
        name=name or dataset.name,
        ids=[ex.id for ex in dataset.examples],
        items=items,
        prior=(smoothed_prior(counts, alpha) if prior is None else np.asarray(prior)).astype(
            np.float32
        ),
        empirical=empirical_distribution(counts),
        labels=majority_label(counts, space.utilities, space.tie_break),
        true_distribution=dataset.true_distributions(),
        pad_token_id=pad_token_id,
        features=features,
        annotator_ids=who,
        annotator_labels=(
            [[c for _, c in ex.annotations or []] for ex in dataset.examples] if annotated else None
        ),
        annotator_slots=[vocabulary.slots(w) for w in who] if who and vocabulary else None,
        class_ranks=class_ranks(space.utilities),
    )


MODEL_INPUTS = (
    "input_ids",
    "attention_mask",
    "response_mask",
    "token_type_ids",
    "features",
    "annotators",
)


def model_inputs(batch: dict[str, Tensor], device) -> dict[str, Tensor]:
    return {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}


@torch.no_grad()
def predict_logits(
    model, split: EncodedSplit, batch_size: int, device=None, progress: bool | None = None
) -> Tensor:
    """Logits (N, C), float32 on the CPU, in dataset order.

    Runs in eval mode (restoring the previous mode): no dropout, so an item's logits do not
    depend on how the items are batched.
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    # longest first: batches of similar length pad little (order cannot matter in eval mode)
    order = np.argsort([-len(item["input_ids"]) for item in split.items], kind="stable")
    try:
        out = []
        starts = range(0, len(split), batch_size)
        hide = None if progress is None else not progress  # None: a bar on a terminal only
        for start in tqdm(starts, desc="evaluate", unit="batch", disable=hide, leave=False):
            indices = order[start : start + batch_size]
            out.append(model(**model_inputs(split.batch(indices), device)).float().cpu())
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros((0, split.prior.shape[1]))
    logits = torch.empty((len(split), out[0].shape[1]))
    logits[torch.as_tensor(order)] = torch.cat(out)
    return logits


def predict_split(model, split: EncodedSplit, batch_size: int, device=None) -> np.ndarray:
    """Class distributions q (N, C) in dataset order."""
    return torch.softmax(predict_logits(model, split, batch_size, device), dim=-1).numpy()


@torch.no_grad()
def objective_from_logits(
    logits: Tensor,
    split: EncodedSplit,
    objective: Callable[[Tensor, Tensor, Tensor], Tensor],
    batch_size: int,
    seed: int = 0,
) -> float:
    """The training objective over ``split``, in random batches of the TRAINING batch size.

    Batch-normalised d-PM losses depend on the batch, so a validation loss is comparable to
    the training loss only at the same batch size and with batches of random composition
    (METHOD section 7); the order is fixed by ``seed`` so that evaluations are comparable.
    A partial last batch is dropped unless the split is smaller than one batch.
    """
    order = np.random.default_rng(seed).permutation(len(split))
    num_batches = max(1, len(split) // batch_size)
    total, count = 0.0, 0
    for b in range(num_batches):
        indices = order[b * batch_size : (b + 1) * batch_size]
        batch = split.batch(indices)
        losses = objective(logits[indices], batch["prior"], batch["labels"])  # (B,)
        total += float(losses.sum())
        count += len(indices)
    return total / max(count, 1)


@torch.no_grad()
def annotation_predictions(
    model, split: EncodedSplit, batch_size: int, q: np.ndarray | None = None
) -> np.ndarray:
    """Each annotation's predicted distribution ``q_a(. | x_i)`` (M, C), in the order of
    :meth:`EncodedSplit.annotations`: an annotator-aware model's slot for that annotator
    (pooled for rare and unseen ones), else the item's ``q`` (given, or predicted here)."""
    item_of, _ = split.annotations()
    if split.annotator_slots is None:
        q = predict_split(model, split, batch_size) if q is None else q
        return q[item_of]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(split), batch_size):
            indices = np.arange(start, min(start + batch_size, len(split)))
            batch = split.batch(indices)
            inputs = model_inputs(batch, device)
            inputs.pop("annotators")
            log_q = model(**inputs, slots=batch["annotators"].clamp_min(0).to(device))
            present = (batch["annotator_labels"] >= 0).to(device)  # (B, K)
            out.append(log_q[present].float().exp().cpu())  # (m, C), item then annotator order
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, split.prior.shape[1]))
    return torch.cat(out).double().numpy()


@torch.no_grad()
def annotator_objective_on_split(model, split: EncodedSplit, batch_size: int) -> float:
    """Mean over items of the annotator cross-entropy (the annotator-aware training loss)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for start in range(0, len(split), batch_size):
            indices = np.arange(start, min(start + batch_size, len(split)))
            total += float(annotator_objective(model, split.batch(indices), device).sum())
    finally:
        model.train(was_training)
    return total / max(len(split), 1)


def annotator_results(
    model, split: EncodedSplit, q: np.ndarray, batch_size: int
) -> dict[str, float]:
    """The perspectivist metrics and ``wasserstein`` of :mod:`bayespref.annotator_metrics`
    that apply to ``split`` (none without annotator ids and without an ordinal scale)."""
    item_of, labels = split.annotations()
    q_annotations = annotation_predictions(model, split, batch_size, q)
    return perspectivist_metrics(
        q_annotations, labels, split.labels[item_of], split.class_ranks, q=q, t=split.empirical
    )


def objective_on_split(
    model,
    split: EncodedSplit,
    objective: Callable[[Tensor, Tensor, Tensor], Tensor],
    batch_size: int,
    seed: int = 0,
) -> float:
    """:func:`objective_from_logits` for a model (eval mode) over ``split``."""
    logits = predict_logits(model, split, batch_size)
    return objective_from_logits(logits, split, objective, batch_size, seed)


def evaluate_split(
    model,
    split: EncodedSplit,
    batch_size: int = 64,
    objective: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    objective_batch_size: int | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, float], np.ndarray]:
    """Every METHOD section 6 metric (plus ``loss`` if ``objective``); returns (metrics, q).

    ``objective(logits, prior, labels) -> (B,)`` is the training loss in evaluation mode; it
    reuses the one forward pass over the split.
    """
    logits = predict_logits(model, split, batch_size, progress=progress)
    q = torch.softmax(logits, dim=-1).numpy()
    results = metrics_lib.compute_metrics(
        q, split.empirical, split.labels, true_distribution=split.true_distribution
    )
    results.update(annotator_results(model, split, q, batch_size))
    if objective is not None:
        results["loss"] = objective_from_logits(
            logits, split, objective, objective_batch_size or batch_size
        )
    return results, q


def constant_predictor_metrics(train_empirical: np.ndarray, split: EncodedSplit) -> dict:
    """Metrics of the predictor that always outputs the training set's mean label distribution."""
    mean = train_empirical.mean(axis=0)
    q = np.tile(mean / mean.sum(), (len(split), 1))
    return metrics_lib.compute_metrics(
        q, split.empirical, split.labels, true_distribution=split.true_distribution
    )


def evaluate_run(
    run: str,
    data: str | dict | None = None,
    data_format: str | None = None,
    options: dict | None = None,
    checkpoint: str = "best",
    batch_size: int = 64,
    strict: bool = False,
) -> dict:
    """Evaluate a run's model on ``data`` (default: the run's validation split).

    ``data`` is a file path or a dict of loader options; the format and loader options default
    to those in the run's ``config.yaml``. Returns ``{"model": metrics, "constant": metrics,
    "data": description, "n": items}`` where ``constant`` is the predictor that always outputs
    the training set's mean label distribution.
    """
    run_dir = Path(run)
    config = load_config(run_dir / "config.yaml")
    data_config = config.data
    if data_format is not None and data_format != data_config.format:
        data_config = dataclasses.replace(data_config, format=data_format, options={})
    if options:
        data_config = dataclasses.replace(data_config, options={**data_config.options, **options})
    if strict:
        data_config = dataclasses.replace(data_config, strict=True)
    if data is None:
        _, dataset = load_train_valid(data_config, config.seed)
        described = "validation split of the run"
    else:
        dataset = load_split(data_config, data, "eval")
        described = str(data)
    model = PreferenceModel.from_run(run_dir, checkpoint=checkpoint)
    require_same_classes(dataset.label_space, model.label_space, described)
    split = encode_split(model, dataset, config.data.alpha)
    results, _ = evaluate_split(model, split, batch_size=batch_size)
    out = {"data": described, "n": len(split), "model": results}
    stats_file = run_dir / "data_stats.json"
    if stats_file.is_file():
        mean = np.asarray(json.loads(stats_file.read_text())["train_mean_distribution"])
        out["constant"] = constant_predictor_metrics(mean[None, :], split)
    return out
