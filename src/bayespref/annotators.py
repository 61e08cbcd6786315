"""Annotator-aware heads: predict each annotator's label distribution, then the crowd's.

METHOD section 8. An annotator-aware :class:`~bayespref.model.PreferenceModel` replaces its
MLP head by one of two heads on the same pooled encoder features ``h`` (B, H):

- ``annotator-heads`` (:class:`AnnotatorHeads`, Davani et al. 2022): a shared MLP trunk, then
  one linear output layer per annotator slot, ``q_a(l | x) = softmax(W_a g(h) + b_a)``.
- ``annotator-embeddings`` (:class:`AnnotatorEmbeddingHead`, Deng et al. 2023): an embedding
  ``e_a`` per slot joined to ``h``, ``q_a(l | x) = softmax(MLP([h; e_a]))``.

Slots (:class:`AnnotatorVocabulary`). Slot 0 is the **pooled** slot; slots ``1..S-1`` are the
annotators with at least ``min_labels`` labels in the training split, in order of first
appearance. Rare annotators (fewer than ``min_labels`` training labels) and annotators never
seen in training fall back to the pooled slot. The pooled slot is trained on *every* training
label once (rare annotators' labels through their own slot, which is the pooled one; the other
annotators' labels through an extra term of the loss, :func:`bayespref.annotator_losses.
annotator_nll`), so it is the population's head and is always trained.

The crowd distribution (what ``forward`` returns, as logits):

- an item with annotators ``A_i`` (their slots, repeats counted): the mixture
  ``q(l | x_i) = (1 / |A_i|) sum_{a in A_i} q_{slot(a)}(l | x_i)``;
- an item whose annotators are unknown (no ids, e.g. a new text being scored): the population
  mixture ``q(l | x) = sum_s w_s q_s(l | x)`` with ``w_s`` the share of training labels given by
  slot ``s``'s annotator (the pooled slot's weight is the rare annotators' share).

The logits returned are ``log q`` of the mixture (a valid logit vector: ``softmax(log q) = q``),
so every metric, scoring rule and evaluation that takes logits works unchanged.
"""

from __future__ import annotations

import collections
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .annotator_losses import annotator_nll
from .batching import TOKEN_INPUTS
from .config.preference import MODEL_KINDS, ModelConfig
from .data.schema import AnnotatedDataset, DataError

POOLED = "<pooled>"
"""The id shown for slot 0, the pooled head of rare and unseen annotators."""

PAD = -1
"""Padding of the (B, K) annotator-slot and annotator-label tensors."""


@dataclass(frozen=True)
class AnnotatorVocabulary:
    """The annotator slots of a model: ``ids[s]`` is slot ``s + 1``'s annotator.

    ``label_counts[s]`` is the number of training labels of slot ``s`` (slot 0: those of the
    rare annotators); :attr:`weights` are their shares, the population mixture's ``w``.
    """

    ids: tuple[str, ...]
    label_counts: tuple[int, ...]
    min_labels: int

    def __post_init__(self):
        if len(self.label_counts) != len(self.ids) + 1:
            raise ValueError(
                f"{len(self.ids)} annotators need {len(self.ids) + 1} label counts (slot 0 is "
                f"the pooled slot), got {len(self.label_counts)}"
            )
        if sum(self.label_counts) <= 0:
            raise ValueError("an annotator vocabulary needs at least one training label")

    @classmethod
    def from_dataset(cls, dataset: AnnotatedDataset, min_labels: int) -> AnnotatorVocabulary:
        """Slots from a training split. Every item must carry annotator ids: an item without
        them would train no annotator, so it is a :class:`DataError` naming the item."""
        counts: collections.Counter[str] = collections.Counter()
        for example in dataset.examples:
            if not example.annotations:
                raise DataError(
                    f"item {example.id!r} has no annotator ids: annotator-aware models "
                    "(model.kind=annotator-heads|annotator-embeddings) need the annotator of "
                    "every training label (native format: an 'annotators' field beside 'labels')",
                    dataset.report.source if dataset.report is not None else None,
                )
            counts.update(who for who, _ in example.annotations)
        frequent = tuple(who for who, n in counts.items() if n >= min_labels)
        rare = sum(n for who, n in counts.items() if n < min_labels)
        return cls(frequent, (rare, *(counts[who] for who in frequent)), int(min_labels))

    @property
    def num_slots(self) -> int:
        return len(self.ids) + 1

    @property
    def weights(self) -> np.ndarray:
        """(S,) float64 shares of training labels per slot, summing to 1."""
        counts = np.asarray(self.label_counts, dtype=np.float64)
        return counts / counts.sum()

    def slot_of(self, annotator: str) -> int:
        """The slot of an annotator id: its own, or 0 (pooled) when rare or unseen."""
        return self._index.get(str(annotator), 0)

    def slots(self, annotators: Iterable[str]) -> list[int]:
        return [self.slot_of(a) for a in annotators]

    def slot_name(self, slot: int) -> str:
        return POOLED if slot == 0 else self.ids[slot - 1]

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {who: s + 1 for s, who in enumerate(self.ids)}

    def to_dict(self) -> dict:
        return {
            "ids": list(self.ids),
            "label_counts": list(self.label_counts),
            "min_labels": self.min_labels,
        }

    @classmethod
    def from_dict(cls, d: dict) -> AnnotatorVocabulary:
        return cls(
            tuple(str(i) for i in d["ids"]),
            tuple(int(n) for n in d["label_counts"]),
            int(d["min_labels"]),
        )


def pad_rows(rows: Sequence[Sequence[int]], pad: int = PAD) -> Tensor:
    """(B, K) long tensor of ragged rows, right-padded with ``pad`` (K >= 1)."""
    width = max([1, *(len(r) for r in rows)])
    return torch.tensor([list(r) + [pad] * (width - len(r)) for r in rows], dtype=torch.long)


def crowd_log_mixture(log_q_slots: Tensor, slots: Tensor | None, log_weights: Tensor) -> Tensor:
    """``log q`` (B, C) of the crowd mixture (module docstring), from every slot's
    log-probabilities ``log_q_slots`` (B, S, C).

    ``slots`` (B, K): each item's annotator slots, :data:`PAD` where absent; a row with no
    slot (or ``slots=None``) gets the population mixture ``log sum_s w_s q_s``
    (``log_weights`` (S,) = ``log w``). Computed with ``logsumexp``, so it is stable.
    """
    population = torch.logsumexp(log_q_slots + log_weights[None, :, None], dim=1)  # (B, C)
    if slots is None:
        return population
    present = slots != PAD  # (B, K)
    picked = log_q_slots.gather(
        1, slots.clamp_min(0)[:, :, None].expand(-1, -1, log_q_slots.shape[-1])
    )  # (B, K, C)
    picked = picked.masked_fill(~present[:, :, None], -math.inf)
    count = present.sum(1, keepdim=True)  # (B, 1)
    mixture = torch.logsumexp(picked, dim=1) - count.clamp_min(1).to(picked.dtype).log()
    return torch.where(count > 0, mixture, population)


def annotator_objective(model: nn.Module, batch: dict[str, Tensor], device) -> Tensor:
    """Per-item :func:`~bayespref.annotator_losses.annotator_nll` (B,) of a batch holding
    model inputs, ``annotators`` (B, K) slots and ``annotator_labels`` (B, K).

    One forward asks for the pooled slot and each annotator's slot, ``slots = [0, s_1 ..
    s_K]``, so the pooled term and the annotators' terms share the encoder pass.
    """
    inputs = {k: v.to(device) for k, v in batch.items() if k in (*TOKEN_INPUTS, "features")}
    annotators = batch["annotators"].to(device)  # (B, K)
    labels = batch["annotator_labels"].to(device)  # (B, K)
    pooled = torch.zeros_like(annotators[:, :1])
    slots = torch.cat([pooled, annotators.clamp_min(0)], dim=1)  # (B, K + 1)
    log_q = model(**inputs, slots=slots)  # (B, K + 1, C)
    return annotator_nll(log_q[:, 1:], labels, annotators, log_q[:, 0])


class AnnotatorHead(nn.Module):
    """What both annotator-aware heads share: the slots, their weights, the crowd mixture.

    ``forward(features (B, H), annotators (B, K) | None) -> crowd logits (B, C)``;
    :meth:`slot_log_probs` gives chosen slots' ``log q_s`` (B, K, C).
    """

    def __init__(self, vocabulary: AnnotatorVocabulary):
        super().__init__()
        self.vocabulary = vocabulary
        log_weights = torch.as_tensor(np.log(np.maximum(vocabulary.weights, 1e-300)))
        self.log_weights: Tensor  # (S,) log w, from the vocabulary (not saved: it is in the JSON)
        self.register_buffer("log_weights", log_weights.float(), persistent=False)

    def all_log_probs(self, features: Tensor) -> Tensor:
        """``log q_s`` of every slot, (B, S, C)."""
        raise NotImplementedError

    def slot_log_probs(self, features: Tensor, slots: Tensor) -> Tensor:
        """``log q_s`` (B, K, C) of the slots ``slots`` (B, K) (PAD rows: the pooled slot's)."""
        log_q = self.all_log_probs(features)  # (B, S, C)
        index = slots.clamp_min(0)[:, :, None].expand(-1, -1, log_q.shape[-1])
        return log_q.gather(1, index)

    def forward(
        self, features: Tensor, annotators: Tensor | None = None, slots: Tensor | None = None
    ) -> Tensor:
        """Crowd logits (B, C) of items with ``annotators`` (B, K) (None: unknown); with
        ``slots`` (B, K) instead, those slots' ``log q`` (B, K, C)."""
        if slots is not None:
            return self.slot_log_probs(features, slots)
        log_q = self.all_log_probs(features)  # (B, S, C)
        return crowd_log_mixture(log_q, annotators, self.log_weights.to(log_q.dtype))


class AnnotatorHeads(AnnotatorHead):
    """A shared trunk ``g(h) = GELU(W h + b)`` (with dropout), then one linear layer per slot."""

    def __init__(
        self,
        hidden: int,
        head_hidden: int,
        num_classes: int,
        vocabulary: AnnotatorVocabulary,
        dropout: float,
    ):
        super().__init__(vocabulary)
        self.num_classes = num_classes
        self.trunk = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, head_hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.out = nn.Linear(head_hidden, vocabulary.num_slots * num_classes)

    def all_log_probs(self, features: Tensor) -> Tensor:
        logits = self.out(self.trunk(features))  # (B, S * C)
        return F.log_softmax(logits.view(len(features), -1, self.num_classes).float(), dim=-1)


class AnnotatorEmbeddingHead(AnnotatorHead):
    """``MLP([h; e_s])`` with a learned ``e_s`` per slot (``dim`` wide).

    The first layer is split as ``W [h; e] = W_h h + W_e e``, so every slot of a batch costs one
    (B, S, hidden) sum rather than a pass over B * S concatenated rows.
    """

    def __init__(
        self,
        hidden: int,
        head_hidden: int,
        num_classes: int,
        vocabulary: AnnotatorVocabulary,
        dropout: float,
        dim: int,
    ):
        super().__init__(vocabulary)
        self.embedding = nn.Embedding(vocabulary.num_slots, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.dropout = nn.Dropout(dropout)
        self.from_features = nn.Linear(hidden, head_hidden)
        self.from_annotator = nn.Linear(dim, head_hidden, bias=False)
        self.out = nn.Linear(head_hidden, num_classes)

    def all_log_probs(self, features: Tensor) -> Tensor:
        h = self.from_features(self.dropout(features))  # (B, hidden)
        e = self.from_annotator(self.embedding.weight)  # (S, hidden)
        joint = self.dropout(F.gelu(h[:, None, :] + e[None, :, :]))  # (B, S, hidden)
        return F.log_softmax(self.out(joint).float(), dim=-1)  # (B, S, C)


def make_head(
    config: ModelConfig, hidden: int, num_classes: int, vocabulary: AnnotatorVocabulary | None
) -> nn.Module:
    """The head of a :class:`~bayespref.model.PreferenceModel` as ``config.kind`` says.

    ``single``: the MLP ``Dropout, Linear(H, head_hidden), GELU, Dropout, Linear(head_hidden,
    C)``; ``annotator-heads`` / ``annotator-embeddings``: :class:`AnnotatorHeads` /
    :class:`AnnotatorEmbeddingHead` over ``vocabulary``'s slots (required for them).
    """
    head_hidden = config.head_hidden or hidden
    if config.kind == "single":
        return nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(hidden, head_hidden),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(head_hidden, num_classes),
        )
    if vocabulary is None:
        raise ValueError(f"model.kind={config.kind} needs the annotator vocabulary (slots)")
    if config.kind == "annotator-heads":
        return AnnotatorHeads(hidden, head_hidden, num_classes, vocabulary, config.dropout)
    if config.kind == "annotator-embeddings":
        return AnnotatorEmbeddingHead(
            hidden, head_hidden, num_classes, vocabulary, config.dropout, config.annotator_dim
        )
    raise ValueError(f"model.kind must be one of {list(MODEL_KINDS)}, got {config.kind!r}")
