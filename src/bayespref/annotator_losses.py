"""The training loss of annotator-aware models (METHOD section 8), in the style of
:mod:`bayespref.losses`: a pure function returning one value per item; the caller reduces.

Each observed (item ``i``, annotator ``a``, label ``l``) triple costs the cross-entropy of that
annotator's predicted distribution, ``-log q_{slot(a)}(l | x_i)``. An item's value is the mean
over its triples, the annotator-aware analogue of the soft-label cross-entropy (which is the
mean over an item's labels of ``-log q(l | x_i)``), so items weigh alike whatever their number
of annotators. The pooled slot (rare and unseen annotators, :mod:`bayespref.annotators`) also
learns from every label of the other annotators, through a second term, so that it is the
population's head:

``loss_i = (1 / n_i) sum_k [ -log q_{s_k}(l_k | x_i) + [s_k != 0] (-log q_0(l_k | x_i)) ]``

with ``n_i`` the item's number of triples and ``s_k`` the slot of its ``k``-th annotator.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["ANNOTATOR_LOSS", "annotator_nll"]

ANNOTATOR_LOSS = "annotator-ce"
"""The ``loss.name`` of annotator-aware training (not an entry of ``losses.LOSSES``: it takes
per-annotator log-probabilities, not one distribution per item)."""


def annotator_nll(
    log_q_annotators: Tensor,
    labels: Tensor,
    slots: Tensor,
    log_q_pooled: Tensor | None = None,
) -> Tensor:
    """Per-item annotator cross-entropy (module docstring), shape (B,).

    Args:
        log_q_annotators: (B, K, C) log-probabilities of each item's ``K`` annotator slots
            (rows of padded positions are ignored).
        labels: (B, K) long, the label each annotator gave; ``-1`` marks padding.
        slots: (B, K) long, each annotator's slot (0 = pooled; ``-1`` padding).
        log_q_pooled: (B, C) log-probabilities of the pooled slot, or None to leave out the
            pooled term (then the loss is the plain mean triple cross-entropy).

    An item without any triple costs 0. Computed in float32.
    """
    if log_q_annotators.dim() != 3 or labels.shape != log_q_annotators.shape[:2]:
        raise ValueError(
            f"expected log_q_annotators (B, K, C) and labels (B, K), got "
            f"{tuple(log_q_annotators.shape)} and {tuple(labels.shape)}"
        )
    if slots.shape != labels.shape:
        raise ValueError(f"slots {tuple(slots.shape)} must match labels {tuple(labels.shape)}")
    log_q_annotators = log_q_annotators.float()
    present = labels >= 0  # (B, K)
    index = labels.clamp_min(0).unsqueeze(-1)  # (B, K, 1)
    nll = -log_q_annotators.gather(2, index).squeeze(-1)  # (B, K)
    terms = nll
    if log_q_pooled is not None:
        pooled = -log_q_pooled.float().gather(1, labels.clamp_min(0))  # (B, K)
        terms = terms + pooled * (slots > 0)
    terms = terms.masked_fill(~present, 0.0)
    count = present.sum(1).clamp_min(1).to(terms.dtype)  # (B,)
    return terms.sum(1) / count
