"""Pairwise outcome probabilities and the pairwise-only loss (METHOD section 9).

A reward model scores each response, ``r_A = r(x, A)`` and ``r_B = r(x, B)``; with
``d = r_A - r_B`` the outcomes (A wins, B wins, tie) have Rao-Kupper probabilities

    P(A) = sigmoid(d - theta),  P(B) = sigmoid(-d - theta),  P(tie) = 1 - P(A) - P(B),

``theta >= 0`` (``theta = 0``: no ties, Bradley-Terry, two outcomes). Rao-Kupper rather than
Davidson: its tie mass is largest at ``d = 0`` and vanishes as ``|d|`` grows, like
Davidson's, but ``P(A)`` stays a plain sigmoid, so ``theta -> 0`` is exactly TRL's model.
:func:`outcome_log_probs` returns ``log P`` per outcome: those are logits (their softmax is
``P`` itself), so every loss of :data:`bayespref.losses.LOSSES` applies to them unchanged.

Margin Bradley-Terry (:func:`margin_bt`) is the one pairwise loss that does not fit the
``fn(logits, prior)`` registry: it needs ``r_A - r_B`` itself and a margin per pair, and
with ties modelled the outcome logits give ``d`` only through ``theta``. It lives in
:data:`PAIRWISE_LOSSES`, beside ``LOSSES``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .data.pairwise import NO_WINNER


def outcome_log_probs(reward_diff: Tensor, theta: Tensor | float | None) -> Tensor:
    """``log P`` of the outcomes from ``d = r_A - r_B`` (B,): (B, 3) (A, B, tie) with
    ``theta`` (Rao-Kupper, ``theta > 0``), or (B, 2) (A, B) with ``theta=None``
    (Bradley-Terry: ``log sigmoid(d)``, ``log sigmoid(-d)``).

    The tie term is computed in log space, with no ``1 - P(A) - P(B)`` cancellation:
    ``P(tie) = sigmoid(d + theta) - sigmoid(d - theta) = sigmoid(d + theta) sigmoid(theta - d)
    (1 - exp(-2 theta))``.
    """
    d = reward_diff.float()
    if d.dim() != 1:
        raise ValueError(f"reward_diff must have shape (B,), got {tuple(d.shape)}")
    if theta is None:
        return torch.stack([F.logsigmoid(d), F.logsigmoid(-d)], dim=1)
    theta_t = torch.as_tensor(theta, dtype=d.dtype, device=d.device)
    log_a = F.logsigmoid(d - theta_t)
    log_b = F.logsigmoid(-d - theta_t)
    log_gap = torch.log(-torch.expm1(-2 * theta_t))  # log(1 - exp(-2 theta)); -inf at 0
    log_tie = F.logsigmoid(d + theta_t) + F.logsigmoid(theta_t - d) + log_gap
    return torch.stack([log_a, log_b, log_tie], dim=1)


def margin_bt(reward_diff: Tensor, winner: Tensor, margin: Tensor | None = None) -> Tensor:
    """Margin Bradley-Terry on the majority winner, per pair (B,):

        winner A: -log sigmoid((r_A - r_B) - m),    winner B: -log sigmoid((r_B - r_A) - m)

    with ``m`` the pair's margin (``margin=None``: 0, plain majority BT; TRL's
    ``RewardTrainer`` loss with its ``margin`` column). ``winner`` (B,) holds 0 (A) or 1 (B);
    a pair with no winner (:data:`NO_WINNER`) costs 0 and gives no gradient, so the caller
    averages over pairs with a winner.
    """
    d = reward_diff.float()
    winner = torch.as_tensor(winner, device=d.device).long()
    if winner.shape != d.shape or d.dim() != 1:
        raise ValueError(
            f"reward_diff and winner must both have shape (B,), got {tuple(d.shape)} and "
            f"{tuple(winner.shape)}"
        )
    m = torch.zeros_like(d) if margin is None else torch.as_tensor(margin, device=d.device).float()
    sign = torch.where(winner == 1, -1.0, 1.0).to(d.dtype)
    loss = -F.logsigmoid(sign * d - m)
    return torch.where(winner == NO_WINNER, torch.zeros_like(loss), loss)


PairwiseLossFn = Callable[..., Tensor]

PAIRWISE_LOSSES: dict[str, PairwiseLossFn] = {"margin": margin_bt}
"""Losses on ``(r_A - r_B, winner, margin) -> (B,)`` that do not fit ``LOSSES``' signature."""
