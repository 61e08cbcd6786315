"""Aggregating annotators with a model of each one's reliability (Dawid & Skene 1979).

Raw counts treat every annotator alike. Dawid-Skene instead assumes each item has one latent
class ``z_i`` drawn from a class prior ``pi`` and that annotator ``a`` reports class ``l`` for
an item of class ``c`` with probability ``theta_a[c, l]`` (a per-annotator confusion matrix),
independently across annotators. EM alternates

- E step: ``T[i, c] ∝ pi[c] * prod_{(a, l) labelled on i} theta_a[c, l]``;
- M step: ``pi[c] ∝ sum_i T[i, c] + s`` and ``theta_a[c, l] ∝ sum_{i: a said l on i} T[i, c] + s``

(``s`` = ``smoothing``, a small Dirichlet pseudo-count that keeps every probability positive),
starting from the empirical label distribution of each item (the soft majority vote).

Items whose annotations carry no annotator ids (``example.annotations is None``) cannot inform
or use a confusion matrix: they keep their empirical distribution ``count / n`` and take no
part in the EM. A dataset without any ids therefore gets back exactly its empirical
distributions.
"""

from __future__ import annotations

import logging

import numpy as np

from .priors import empirical_distribution
from .schema import AnnotatedDataset

logger = logging.getLogger(__name__)


def dawid_skene(
    dataset: AnnotatedDataset, max_iter: int = 50, tol: float = 1e-6, smoothing: float = 0.01
) -> np.ndarray:
    """Dawid-Skene class posteriors ``T`` (N, C), rows summing to 1.

    ``max_iter`` EM iterations at most; stops when no posterior moves by more than ``tol``.
    Items with no annotator ids keep ``count / n`` (see the module docstring).
    """
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}")
    counts = dataset.counts()  # (N, C)
    num_items, num_classes = counts.shape
    posterior = empirical_distribution(counts) if num_items else np.zeros((0, num_classes))

    # one entry per annotation, (M,)
    item_of: list[int] = []
    annotator_of: list[int] = []
    label_of: list[int] = []
    annotator_ids: dict[str, int] = {}
    for i, example in enumerate(dataset.examples):
        for annotator, label in example.annotations or ():
            item_of.append(i)
            annotator_of.append(annotator_ids.setdefault(str(annotator), len(annotator_ids)))
            label_of.append(int(label))
    if not item_of:
        logger.info("dawid_skene: no annotator ids in %s; returning count distributions", dataset)
        return posterior
    item_index = np.asarray(item_of)  # (M,)
    annotator_index = np.asarray(annotator_of)  # (M,)
    labels = np.asarray(label_of)  # (M,)
    with_ids = np.unique(item_index)  # items that take part in the EM
    num_annotators = len(annotator_ids)
    one_hot = np.eye(num_classes)[labels]  # (M, C)

    for iteration in range(1, max_iter + 1):
        # M step: class prior (C,) and confusion matrices (A, C, C), both smoothed.
        class_prior = posterior[with_ids].sum(axis=0) + smoothing
        class_prior /= class_prior.sum()
        confusion = np.full((num_annotators, num_classes, num_classes), smoothing)
        np.add.at(confusion, annotator_index, posterior[item_index][:, :, None] * one_hot[:, None])
        confusion /= np.maximum(confusion.sum(axis=2, keepdims=True), 1e-300)

        # E step in log space: log pi[c] + sum over the item's annotations of log theta_a[c, l].
        log_conf = np.log(np.maximum(confusion, 1e-300))
        log_post = np.zeros((num_items, num_classes))
        np.add.at(log_post, item_index, log_conf[annotator_index, :, labels])  # (M, C) summed
        log_post = log_post[with_ids] + np.log(class_prior)[None, :]
        log_post -= log_post.max(axis=1, keepdims=True)
        new = np.exp(log_post)
        new /= new.sum(axis=1, keepdims=True)

        change = float(np.abs(new - posterior[with_ids]).max())
        posterior[with_ids] = new
        if change < tol:
            logger.debug("dawid_skene converged after %d iterations", iteration)
            break
    return posterior


def dawid_skene_prior(dataset: AnnotatedDataset, alpha: float = 0.1, **options) -> np.ndarray:
    """The Dawid-Skene posterior smoothed like the count prior, (N, C).

    ``p_i = (n_i * T_i + alpha) / (n_i + C * alpha)``: ``n_i * T_i`` plays the role of the
    counts (same total ``n_i``), so ``alpha`` means the same as in
    :func:`~bayespref.data.priors.smoothed_prior`, and an item whose posterior equals its count
    distribution gets exactly the count prior. ``options`` go to :func:`dawid_skene`.
    """
    counts = dataset.counts().astype(np.float64)  # (N, C)
    n = counts.sum(axis=1, keepdims=True)  # (N, 1)
    num_classes = counts.shape[1]
    total = n + num_classes * alpha
    if np.any(total <= 0):
        raise ValueError("an item with no annotations has no prior when alpha = 0")
    return (n * dawid_skene(dataset, **options) + alpha) / total
