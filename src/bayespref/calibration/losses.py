"""Generator losses of calibration: pure functions, per example (B,), the caller reduces.

``L = w_mle * NLL(gold) + w_rank * L_rank (+ w_gold * L_gold)`` (METHOD section 5; BRIO's
ranking loss, report Eq. 7), on the token log-probabilities of the gold reply and of the
candidates ranked best to worst by the preference model.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .config import SCORINGS, CalibrationLossConfig


def sequence_scores(
    token_logprobs: Tensor,
    mask: Tensor,
    scoring: str = "length-normalised",
    length_penalty: float = 1.0,
) -> Tensor:
    """The generator's score ``P(y)`` of each sequence (METHOD section 5, step 3).

    ``length-normalised``: ``P(y) = (1 / |y|^a) * sum_t log G(y_t | x, y_<t)``.
    ``mean-prob`` (the reference code): ``P(y) = (1 / |y|) * sum_t G(y_t | x, y_<t)``.

    Args:
        token_logprobs: (N, T) ``log G(y_t | x, y_<t)``; padding may hold anything (even inf).
        mask: (N, T) 1 on real tokens, 0 on padding.
        scoring: ``length-normalised`` or ``mean-prob``.
        length_penalty: ``a``, used by ``length-normalised`` only.

    Returns:
        (N,) scores; higher = more likely under the generator.
    """
    real = mask.bool()
    lengths = real.sum(-1).clamp_min(1).to(token_logprobs.dtype)  # (N,)
    zero = token_logprobs.new_zeros(())
    if scoring == "length-normalised":
        return torch.where(real, token_logprobs, zero).sum(-1) / lengths**length_penalty
    if scoring == "mean-prob":
        return torch.where(real, token_logprobs.exp(), zero).sum(-1) / lengths
    raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")


def token_nll(token_logprobs: Tensor, mask: Tensor) -> Tensor:
    """MLE term: ``-(1 / |y|) * sum_t log G(y_t | x, y_<t)`` per sequence, (N, T) -> (N,)."""
    real = mask.bool()
    total = torch.where(real, token_logprobs, token_logprobs.new_zeros(())).sum(-1)
    return -total / real.sum(-1).clamp_min(1).to(token_logprobs.dtype)


def margin_ranking_loss(scores: Tensor, margin: float, mask: Tensor | None = None) -> Tensor:
    """BRIO ranking loss over candidates sorted best to worst (report Eq. 7, METHOD 5 step 4).

    ``L_r = sum_{i<j} max(0, P(y'_j) - P(y'_i) + margin * (j - i))``: each better candidate
    must outscore each worse one by a margin that grows with their distance in the ranking.
    Summed over pairs, not averaged.

    Args:
        scores: (B, K) ``P(y'_k)``, column 0 the candidate the preference model likes best.
        margin: ``lambda`` (reference: 0.001).
        mask: (B, K) 1 for real candidates, 0 for padding (a context with fewer than K unique
            candidates); real candidates come first. Pairs with a padded member are left out.

    Returns:
        (B,) loss per context.
    """
    K = scores.shape[-1]
    position = torch.arange(K, device=scores.device)
    # (B, K, K): entry [b, i, j] = P_j - P_i + margin * (j - i)
    gap = scores[:, None, :] - scores[:, :, None]
    gap = gap + margin * (position[None, :] - position[:, None]).to(scores.dtype)
    pairs = position[:, None] < position[None, :]  # (K, K): i < j
    if mask is not None:
        mask = mask.bool()
        pairs = pairs & mask[:, :, None] & mask[:, None, :]  # (B, K, K)
    return (torch.relu(gap) * pairs.to(scores.dtype)).sum(dim=(-2, -1))


def gold_margin_loss(
    scores: Tensor, gold_scores: Tensor, margin: float, mask: Tensor | None = None
) -> Tensor:
    """Optional gold term: ``sum_k max(0, P(y'_k) - P(gold) + lambda_gold)``.

    Args:
        scores: (B, K) candidate scores; gold_scores: (B,); mask: (B, K) as in
            :func:`margin_ranking_loss`.

    Returns:
        (B,) loss per context: 0 when the gold reply outscores every candidate by the margin.
    """
    hinge = torch.relu(scores - gold_scores[:, None] + margin)  # (B, K)
    if mask is not None:
        hinge = hinge * mask.to(hinge.dtype)
    return hinge.sum(-1)


def calibration_loss(
    gold_logprobs: Tensor,
    gold_mask: Tensor,
    candidate_logprobs: Tensor,
    candidate_mask: Tensor,
    candidate_present: Tensor,
    loss: CalibrationLossConfig,
) -> dict[str, Tensor]:
    """``L = w_mle * NLL(gold) + w_rank * L_r + w_gold * L_gold``, each term (B,).

    Args:
        gold_logprobs, gold_mask: (B, T) token log-probabilities of the gold reply and its mask.
        candidate_logprobs, candidate_mask: (B, K, T) the same for the candidates, best first.
        candidate_present: (B, K) 1 where a candidate exists (fewer than K unique: padding).
        loss: weights, margins and the scoring of ``P(y)``.

    Returns:
        ``{"loss", "rank", "mle", "gold"}``, each (B,).
    """
    B, K, T = candidate_logprobs.shape
    score = sequence_scores(
        candidate_logprobs.reshape(B * K, T),
        candidate_mask.reshape(B * K, T),
        loss.scoring,
        loss.length_penalty,
    ).view(B, K)
    mle = token_nll(gold_logprobs, gold_mask)
    rank = margin_ranking_loss(score, loss.margin, candidate_present)
    if loss.gold_weight > 0:
        gold_score = sequence_scores(gold_logprobs, gold_mask, loss.scoring, loss.length_penalty)
        gold = gold_margin_loss(score, gold_score, loss.gold_margin, candidate_present)
    else:
        gold = torch.zeros_like(mle)
    total = loss.mle_weight * mle + loss.rank_weight * rank + loss.gold_weight * gold
    return {"loss": total, "rank": rank, "mle": mle, "gold": gold}
