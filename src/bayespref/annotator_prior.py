"""The annotator-mixture prior: the crowd distribution of annotator heads as the d-PM prior.

METHOD section 1's prior smooths an item's label counts toward the uniform distribution,
``p_i = (count_i + alpha) / (n_i + C alpha)``: the posterior mean of a Dirichlet with a uniform
base measure and ``C alpha`` pseudo-labels. ``data.prior=annotator-mixture`` keeps that form and
replaces the uniform base measure by what a model of the annotators expects for the item:

    p_i = (count_i + kappa m_i) / (n_i + kappa)

``m_i`` is the crowd distribution of :class:`~bayespref.annotators.AnnotatorHeads` for item
``i`` (the mixture of its own annotators' predicted distributions, METHOD section 8), and
``kappa`` (``data.prior_strength``) the number of pseudo-annotators the mixture counts for. So
the item's own labels stay the evidence, and where they are few (one or two annotators) the
prior leans on what these annotators say about similar texts, the Bayesian form of modelling
who said what.

``m_i`` must not come from heads that saw item ``i``'s labels, or the prior would count them
twice: :func:`cross_fitted_crowd` splits the training items into ``folds`` folds, fits the heads
on the pooled encoder features of the other folds, and predicts each fold's items (annotators
rare or unseen in those folds use the pooled head, as in the annotator-aware models).

The heads are fitted on frozen features with the loss study's protocol for the annotator-heads
row (AdamW lr 1e-3, batch 16, 6 epochs, dropout 0.1): one fixed setting, not tuned.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .annotators import AnnotatorHeads, AnnotatorVocabulary, annotator_objective, pad_rows
from .data.schema import AnnotatedDataset, DataError

logger = logging.getLogger(__name__)

__all__ = ["annotator_mixture_prior", "cross_fitted_crowd", "fit_annotator_heads"]


def annotator_mixture_prior(counts: np.ndarray, crowd: np.ndarray, strength: float) -> np.ndarray:
    """``p_i = (count_i + kappa m_i) / (n_i + kappa)`` (module docstring), shape (N, C).

    Args:
        counts: (N, C) label counts of each item.
        crowd: (N, C) the crowd distribution ``m_i`` of each item, rows summing to 1.
        strength: ``kappa > 0``, the pseudo-annotators the crowd distribution counts for.
    """
    counts = np.asarray(counts, dtype=np.float64)
    crowd = np.asarray(crowd, dtype=np.float64)
    if counts.shape != crowd.shape:
        raise ValueError(f"counts {counts.shape} and crowd {crowd.shape} must have one shape")
    if strength <= 0:
        raise ValueError(f"the prior strength kappa must be > 0, got {strength}")
    n = counts.sum(axis=1, keepdims=True)  # (N, 1)
    return (counts + strength * crowd) / (n + strength)


def _annotations(dataset: AnnotatedDataset) -> tuple[list[list[str]], list[list[int]]]:
    """Each item's annotator ids and labels; every item must name its annotators."""
    ids, labels = [], []
    for example in dataset.examples:
        if not example.annotations:
            raise DataError(
                f"item {example.id!r} has no annotator ids: data.prior=annotator-mixture "
                "models each annotator and needs the annotator of every training label (native "
                "format: an 'annotators' field beside 'labels')",
                dataset.report.source if dataset.report is not None else None,
            )
        ids.append([who for who, _ in example.annotations])
        labels.append([label for _, label in example.annotations])
    return ids, labels


def fit_annotator_heads(
    features: np.ndarray,
    dataset: AnnotatedDataset,
    min_labels: int,
    seed: int,
    epochs: int = 6,
    batch_size: int = 16,
    lr: float = 1e-3,
    dropout: float = 0.1,
) -> AnnotatorHeads:
    """Annotator heads fitted on frozen features (N, H) of ``dataset``'s items, in eval mode.

    The slots are ``dataset``'s (:meth:`AnnotatorVocabulary.from_dataset` with
    ``min_labels``); the loss is :func:`~bayespref.annotators.annotator_objective`, the one the
    annotator-aware models train with. Initialisation and batch order follow ``seed``.
    """
    vocabulary = AnnotatorVocabulary.from_dataset(dataset, min_labels)
    ids, labels = _annotations(dataset)
    slots = pad_rows([vocabulary.slots(who) for who in ids])  # (N, K)
    label_rows = pad_rows(labels)  # (N, K)
    inputs = torch.as_tensor(np.asarray(features, dtype=np.float32))  # (N, H)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hidden = inputs.shape[1]
        heads = AnnotatorHeads(hidden, hidden, dataset.num_classes, vocabulary, dropout)
        optimiser = torch.optim.AdamW(heads.parameters(), lr=lr)
        heads.train()
        for _ in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                batch = {
                    "features": inputs[rows],
                    "annotators": slots[rows],
                    "annotator_labels": label_rows[rows],
                }
                loss = annotator_objective(heads, batch, "cpu").mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return heads.eval()


def cross_fitted_crowd(
    features: np.ndarray,
    dataset: AnnotatedDataset,
    min_labels: int,
    seed: int,
    folds: int = 5,
    **fit_options,
) -> np.ndarray:
    """Each item's crowd distribution ``m_i`` (N, C) from heads that never saw its labels.

    Items are split into ``folds`` folds by a seeded permutation; fold ``k``'s items are
    predicted by :func:`fit_annotator_heads` fitted on the other folds, as the mixture of their
    own annotators' distributions (slots unknown to those heads: the pooled head).
    ``fit_options`` (epochs, batch_size, lr, dropout) go to :func:`fit_annotator_heads`.
    """
    n = len(dataset)
    if np.shape(features)[0] != n:
        raise ValueError(f"features has {np.shape(features)[0]} rows for {n} items")
    if not 2 <= folds <= n:
        raise ValueError(f"cross-fitting needs 2 <= folds <= items ({n}), got {folds}")
    ids, _ = _annotations(dataset)
    fold_of = np.random.default_rng(seed).permutation(n) % folds  # (N,)
    crowd = np.zeros((n, dataset.num_classes), dtype=np.float64)
    for fold in range(folds):
        held = np.flatnonzero(fold_of == fold)
        fit = np.flatnonzero(fold_of != fold)
        heads = fit_annotator_heads(
            features[fit], dataset.subset(fit.tolist()), min_labels, seed + 1 + fold, **fit_options
        )
        slots = pad_rows([heads.vocabulary.slots(ids[i]) for i in held])  # (B, K)
        with torch.no_grad():
            log_q = heads(torch.as_tensor(np.asarray(features[held], dtype=np.float32)), slots)
        crowd[held] = log_q.double().exp().numpy()
        logger.debug("annotator-mixture prior: fold %d of %d fitted", fold + 1, folds)
    return crowd / crowd.sum(axis=1, keepdims=True)
