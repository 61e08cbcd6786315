"""Losses for disagreement-aware preference models (METHOD sections 2 and 3).

Every loss is a pure function ``fn(logits, prior, **options) -> Tensor (B,)`` that returns one
value per example; the caller reduces (mean, sum, weighted). ``logits`` are the model's raw
scores ``z`` of shape (B, C) and ``prior`` is the smoothed annotator distribution ``p`` of
shape (B, C) (probabilities, rows sum to 1, exact zeros allowed).

Names follow the report (Wang et al. 2023). Rolf et al.'s code names the two KL directions the
other way round, so always read the formula, not only the name:

========================  =======================================  ============================
registry name             per-example value                        source
========================  =======================================  ============================
``"forward-kl"``          ``KL(r || q) = sum_l r (log r - log q)``  report Eq. 6; d-PM
                                                                   ``rq_loss``; Rolf's "RQ"
``"reverse-kl"``          ``KL(q || r) = sum_l q (log q - log r)``  report Eq. 5; Rolf's "QR"
``"jsd"``                 ``0.5 KL(q || m) + 0.5 KL(r || m)``,      report section 5
                          ``m = (q + r) / 2`` (probabilities)
``"soft"``                ``KL(p || q)``                            soft-label baseline
``"majority"``            ``-log q(majority label)``                majority-vote baseline
========================  =======================================  ============================

with ``q = softmax(z)`` and ``r`` the implicit posterior (report Eq. 4,
:func:`implicit_posterior_log`).

Uniform calling convention: every registry entry takes the same keyword-only options
``normaliser``, ``ema``, ``update_ema``, ``detach_target``, ``gather`` (used by the three
d-PM losses) and ``labels`` (used by ``majority``); a loss ignores the options it does not
use, so a trainer can call ``LOSSES[name](logits, prior, **options)`` with one options dict.
There is no ``**kwargs``: a misspelt option raises ``TypeError``.

Numerics: all maths runs in float32 log space from the logits (``logits.float()`` first, so
bf16/fp16 inputs are computed in float32; the output is float32). ``0 log 0`` is taken as 0
everywhere, so exact zeros in the prior give exact zeros in ``r`` and finite values and
gradients. ``reverse-kl`` is the one loss that is unbounded when the prior has a zero
(``log r = -inf`` where ``q > 0``); it floors the prior at :data:`PRIOR_FLOOR` (1e-8) before
forming ``r``, so every ``log r`` is finite for finite logits (a floored class costs at most
about ``-log(1e-8) = 18.4`` nats plus the spread of ``log m``). The other losses use the prior
as given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "LOSSES",
    "NORMALISERS",
    "PRIOR_FLOOR",
    "LossFn",
    "MarginalEMA",
    "forward_kl",
    "get_loss",
    "implicit_posterior_log",
    "js_divergence",
    "jsd",
    "kl_divergence",
    "majority_nll",
    "reverse_kl",
    "soft_label_kl",
]

NORMALISERS = ("batch", "ema")
"""Valid values of the ``normaliser`` option (METHOD section 2)."""

PRIOR_FLOOR = 1e-8
"""Floor applied to the prior by :func:`reverse_kl` only, so that ``KL(q || r)`` stays finite."""

Gather = Callable[[Tensor], Tensor]


class LossFn(Protocol):
    """Signature shared by every entry of :data:`LOSSES`."""

    def __call__(
        self,
        logits: Tensor,
        prior: Tensor,
        *,
        normaliser: str = "batch",
        ema: MarginalEMA | None = None,
        update_ema: bool = True,
        detach_target: bool = False,
        gather: Gather | None = None,
        labels: Tensor | None = None,
    ) -> Tensor: ...


# --------------------------------------------------------------------------------------------
# Divergences in log space
# --------------------------------------------------------------------------------------------


def kl_divergence(log_a: Tensor, log_b: Tensor) -> Tensor:
    """``KL(a || b) = sum_l a (log a - log b)`` over the last dim, from log-probabilities.

    Shapes: ``(..., C), (..., C) -> (...)``. Terms with ``a = 0`` (including ``log a = -inf``
    and float32 underflow) contribute exactly 0 with a finite gradient (``0 log 0 = 0``); the
    inputs are masked before the product so no ``0 * inf`` reaches either the value or the
    backward pass. ``b = 0`` where ``a > 0`` gives ``+inf``, as it should.
    """
    a = log_a.exp()
    present = a > 0
    zero = torch.zeros((), dtype=log_a.dtype, device=log_a.device)
    log_a_safe = torch.where(present, log_a, zero)
    log_b_safe = torch.where(present, log_b, zero)
    return (a * (log_a_safe - log_b_safe)).sum(dim=-1)


def js_divergence(log_a: Tensor, log_b: Tensor) -> Tensor:
    """Jensen-Shannon divergence ``0.5 KL(a || m) + 0.5 KL(b || m)``, ``m = (a + b) / 2``.

    The mixture is taken in probability space and computed stably in log space,
    ``log m = logaddexp(log a, log b) - log 2``. Shapes ``(..., C), (..., C) -> (...)``;
    symmetric in its arguments and bounded by ``log 2``.
    """
    log_m = torch.logaddexp(log_a, log_b) - math.log(2.0)
    return 0.5 * kl_divergence(log_a, log_m) + 0.5 * kl_divergence(log_b, log_m)


# --------------------------------------------------------------------------------------------
# The implicit posterior target (METHOD section 2)
# --------------------------------------------------------------------------------------------


class MarginalEMA:
    """Running class marginal ``m`` for the ``normaliser="ema"`` mode (METHOD section 2).

    ``m_t = beta * m_{t-1}.detach() + (1 - beta) * mean_batch(q)``: the gradient flows through
    the current batch term only. Before the first update the state is uninitialised and the
    marginal is the batch mean, ``m_1 = mean_batch(q)``. The trainer owns one object per
    training run and passes it as the ``ema`` option; saving it goes through
    :meth:`state_dict`, which holds only a float32 tensor and plain numbers (safetensors for
    the tensor, JSON for the rest; no pickling).

    Attributes:
        num_classes: ``C``.
        beta: decay in ``[0, 1)``; 0 means "this batch only".
        m: the stored marginal, a detached float32 tensor of shape (C,), or ``None`` before the
            first update.
        num_updates: how many times the state was updated.
    """

    def __init__(self, num_classes: int, beta: float = 0.99) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.num_classes = int(num_classes)
        self.beta = float(beta)
        self.m: Tensor | None = None
        self.num_updates = 0

    def log_marginal(self, log_q: Tensor, *, update: bool = True) -> Tensor:
        """``log m_t`` of shape (C,) from the batch's log-probabilities ``log_q`` (B, C).

        Computed in log space: ``logaddexp(log beta + log m_{t-1}, log(1 - beta) +
        log mean_batch(q))``. With ``update=True`` (training) ``m_t`` is stored, detached;
        with ``update=False`` (evaluation) the state is left unchanged.
        """
        if log_q.dim() != 2 or log_q.shape[-1] != self.num_classes:
            raise ValueError(
                f"expected log_q of shape (B, {self.num_classes}), got {tuple(log_q.shape)}"
            )
        log_q = log_q.float()
        log_batch_mean = torch.logsumexp(log_q, dim=0) - math.log(log_q.shape[0])  # (C,)
        if self.m is None or self.beta == 0.0:
            log_m = log_batch_mean
        else:
            log_prev = self.m.to(log_q.device).log()  # detached state; -inf if it underflowed
            log_m = torch.logaddexp(
                math.log(self.beta) + log_prev, math.log1p(-self.beta) + log_batch_mean
            )
        if update:
            self.m = log_m.detach().exp().to(torch.float32)
            self.num_updates += 1
        return log_m

    def state_dict(self) -> dict[str, Tensor | float | int]:
        """``{"m": float32 (C,), "beta": float, "num_updates": int}``.

        Before the first update ``m`` is all zeros and ``num_updates`` is 0.
        """
        m = self.m if self.m is not None else torch.zeros(self.num_classes, dtype=torch.float32)
        return {"m": m.detach().cpu().clone(), "beta": self.beta, "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Tensor | float | int]) -> None:
        """Restore from :meth:`state_dict` (tensors may come back from safetensors)."""
        m = torch.as_tensor(state["m"], dtype=torch.float32).detach().clone()
        if m.shape != (self.num_classes,):
            raise ValueError(f"expected m of shape ({self.num_classes},), got {tuple(m.shape)}")
        beta = float(state["beta"])
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.num_updates = int(state["num_updates"])
        self.m = m if self.num_updates > 0 else None

    def __repr__(self) -> str:
        return (
            f"MarginalEMA(num_classes={self.num_classes}, beta={self.beta}, "
            f"num_updates={self.num_updates})"
        )


def _check_inputs(logits: Tensor, prior: Tensor) -> tuple[Tensor, Tensor]:
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (B, C), got {tuple(logits.shape)}")
    if prior.shape != logits.shape:
        raise ValueError(
            f"prior shape {tuple(prior.shape)} does not match logits shape {tuple(logits.shape)}"
        )
    return logits.float(), prior.to(device=logits.device, dtype=torch.float32)


def _log_marginal(
    log_q: Tensor,
    normaliser: str,
    ema: MarginalEMA | None,
    update_ema: bool,
    gather: Gather | None,
) -> Tensor:
    """``log m`` of shape (C,), up to an additive constant (which cancels in ``r``)."""
    if normaliser not in NORMALISERS:
        raise ValueError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")
    if normaliser == "ema" and ema is None:
        raise ValueError("normaliser='ema' needs a MarginalEMA passed as ema=")
    if normaliser != "ema" and ema is not None:
        raise ValueError(f"ema= is only used with normaliser='ema', got normaliser={normaliser!r}")
    log_q_all = log_q
    if gather is not None:
        log_q_all = gather(log_q)  # (B_global, C)
        if log_q_all.dim() != 2 or log_q_all.shape[-1] != log_q.shape[-1]:
            raise ValueError(
                f"gather must return shape (B_global, {log_q.shape[-1]}), "
                f"got {tuple(log_q_all.shape)}"
            )
    if normaliser == "batch":
        return torch.logsumexp(log_q_all, dim=0)  # log sum_j q_j, (C,)
    assert ema is not None
    return ema.log_marginal(log_q_all, update=update_ema)


def _posterior_and_log_q(
    logits: Tensor,
    prior: Tensor,
    normaliser: str,
    ema: MarginalEMA | None,
    update_ema: bool,
    detach_target: bool,
    gather: Gather | None,
) -> tuple[Tensor, Tensor]:
    logits, prior = _check_inputs(logits, prior)
    log_q = F.log_softmax(logits, dim=-1)  # (B, C)
    log_m = _log_marginal(log_q, normaliser, ema, update_ema, gather)  # (C,)
    log_r = F.log_softmax(torch.log(prior) + log_q - log_m, dim=-1)  # (B, C)
    if detach_target:
        log_r = log_r.detach()
    return log_r, log_q


def implicit_posterior_log(
    logits: Tensor,
    prior: Tensor,
    *,
    normaliser: str = "batch",
    ema: MarginalEMA | None = None,
    update_ema: bool = True,
    detach_target: bool = False,
    gather: Gather | None = None,
) -> Tensor:
    """Log of the implicit posterior, ``log r = log_softmax_l(log p + log q - log m)``.

    Report Eq. 4: ``r_i(l) = p_i(l) q_i(l) / m(l) / Z_i`` with ``q = softmax(logits)`` and
    ``m`` the class marginal of the model's predictions. Constant factors in ``m`` cancel, so
    the batch sum and the batch mean give the same ``r``.

    Args:
        logits: (B, C) model scores; cast to float32.
        prior: (B, C) smoothed annotator distribution ``p``; exact zeros give ``log r = -inf``
            (``r = 0``) in those entries.
        normaliser: ``"batch"`` (the reference code): ``log m = logsumexp_j log q_j`` over the
            batch, i.e. ``log_softmax`` over the batch dim up to a constant; the gradient
            flows through every row. ``"ema"``: ``m`` from ``ema`` (see :class:`MarginalEMA`).
        ema: the trainer's :class:`MarginalEMA`; required with ``normaliser="ema"`` and
            rejected otherwise.
        update_ema: store the new marginal in ``ema`` (training) or leave it unchanged
            (evaluation).
        detach_target: return ``log r`` detached. The default (False) lets the gradient flow
            through ``r`` as in the reference code.
        gather: optional ``Tensor (B_local, C) -> Tensor (B_global, C)`` applied to the float32
            **log-probabilities** ``log_q`` (not ``q``) before forming ``m``, so a distributed
            trainer can normalise over the global batch. It must keep the local rows'
            autograd graph (e.g. ``torch.distributed.nn.functional.all_gather`` then ``cat``).
            With ``"ema"`` the batch mean is also taken over the gathered rows.

    Returns:
        ``log r`` of shape (B, C), float32.
    """
    log_r, _ = _posterior_and_log_q(
        logits, prior, normaliser, ema, update_ema, detach_target, gather
    )
    return log_r


# --------------------------------------------------------------------------------------------
# Losses (METHOD section 3). Per example, shape (B,); the caller reduces.
# --------------------------------------------------------------------------------------------


def forward_kl(
    logits: Tensor,
    prior: Tensor,
    *,
    normaliser: str = "batch",
    ema: MarginalEMA | None = None,
    update_ema: bool = True,
    detach_target: bool = False,
    gather: Gather | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """``KL(r_i || q_i) = sum_l r (log r - log q)``, shape (B,).

    Report Eq. 6; what the d-PM code minimises (its ``rq_loss``; Rolf et al.'s "RQ").
    ``r`` from :func:`implicit_posterior_log` with the d-PM options; ``labels`` is ignored.
    Zeros in the prior give ``r = 0`` terms that count as 0, so with a one-hot prior this is
    the cross-entropy ``-log q(label)``. With ``detach_target=True`` the gradient wrt the
    logits of row i is ``q_i - r_i``.
    """
    log_r, log_q = _posterior_and_log_q(
        logits, prior, normaliser, ema, update_ema, detach_target, gather
    )
    return kl_divergence(log_r, log_q)


def reverse_kl(
    logits: Tensor,
    prior: Tensor,
    *,
    normaliser: str = "batch",
    ema: MarginalEMA | None = None,
    update_ema: bool = True,
    detach_target: bool = False,
    gather: Gather | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """``KL(q_i || r_i) = sum_l q (log q - log r)``, shape (B,).

    Report Eq. 5; Rolf et al.'s "QR" loss. ``labels`` is ignored.

    Clamp: a zero in the prior makes ``log r = -inf`` where ``q > 0`` and this KL infinite, so
    the prior is floored at :data:`PRIOR_FLOOR` (``prior.clamp_min(1e-8)``; ``r`` is then
    renormalised by the softmax) before ``r`` is formed. Priors whose entries are all
    ``>= 1e-8`` (any ``alpha > 0`` smoothing in practice) are unaffected.
    """
    _, prior = _check_inputs(logits, prior)
    log_r, log_q = _posterior_and_log_q(
        logits, prior.clamp_min(PRIOR_FLOOR), normaliser, ema, update_ema, detach_target, gather
    )
    return kl_divergence(log_q, log_r)


def jsd(
    logits: Tensor,
    prior: Tensor,
    *,
    normaliser: str = "batch",
    ema: MarginalEMA | None = None,
    update_ema: bool = True,
    detach_target: bool = False,
    gather: Gather | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """``0.5 KL(q || m) + 0.5 KL(r || m)`` with ``m = (q + r) / 2``, shape (B,).

    Report section 5. The mixture is in probability space (computed as
    ``logaddexp(log q, log r) - log 2``), not an average of log-probabilities (METHOD
    section 7). Bounded by ``log 2``; finite with zeros in the prior, no clamp needed.
    ``labels`` is ignored.
    """
    log_r, log_q = _posterior_and_log_q(
        logits, prior, normaliser, ema, update_ema, detach_target, gather
    )
    return js_divergence(log_q, log_r)


def soft_label_kl(
    logits: Tensor,
    prior: Tensor,
    *,
    normaliser: str = "batch",
    ema: MarginalEMA | None = None,
    update_ema: bool = True,
    detach_target: bool = False,
    gather: Gather | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """Soft-label baseline ``KL(p_i || q_i) = sum_l p (log p - log q)``, shape (B,).

    Takes logits and applies ``log_softmax`` exactly once (the reference baselines fed
    probabilities to ``CrossEntropyLoss``, a softmax twice; METHOD section 7). Equals the soft
    cross-entropy ``-sum p log q`` minus the constant ``H(p)``, so it is 0 at ``q = p``.
    ``0 log 0 = 0`` (``xlogy``), so zeros in the prior are fine. Every other option is
    accepted and ignored.
    """
    logits, prior = _check_inputs(logits, prior)
    log_q = F.log_softmax(logits, dim=-1)  # (B, C)
    return (torch.xlogy(prior, prior) - prior * log_q).sum(dim=-1)


def majority_nll(
    logits: Tensor,
    prior: Tensor,
    *,
    normaliser: str = "batch",
    ema: MarginalEMA | None = None,
    update_ema: bool = True,
    detach_target: bool = False,
    gather: Gather | None = None,
    labels: Tensor | None = None,
) -> Tensor:
    """Majority-vote baseline ``-log q_i(y_i)``, shape (B,).

    ``labels``: LongTensor (B,) of majority labels. The trainer should pass labels computed
    from the counts with the dataset's tie rule (:func:`bayespref.data.priors.majority_label`).
    If ``None``, ``y_i = argmax_l p_i(l)``, which takes the first (lowest) index on ties.
    Applies ``log_softmax`` to the logits exactly once (METHOD section 7). The d-PM options
    are accepted and ignored.
    """
    logits, prior = _check_inputs(logits, prior)
    if labels is None:
        labels = prior.argmax(dim=-1)
    labels = torch.as_tensor(labels, device=logits.device).long()
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must have shape ({logits.shape[0]},), got {tuple(labels.shape)}")
    log_q = F.log_softmax(logits, dim=-1)  # (B, C)
    return -log_q.gather(1, labels.unsqueeze(1)).squeeze(1)


LOSSES: dict[str, LossFn] = {
    "forward-kl": forward_kl,
    "reverse-kl": reverse_kl,
    "jsd": jsd,
    "soft": soft_label_kl,
    "majority": majority_nll,
}
"""Loss registry: name -> ``fn(logits (B, C), prior (B, C), **options) -> (B,)``."""


def get_loss(name: str) -> LossFn:
    """The registry entry for ``name``; ``ValueError`` listing the valid names otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown loss {name!r}; valid names: {', '.join(sorted(LOSSES))}"
        ) from None
