"""The teacher-forced forward of calibration: token log-probabilities of a context's gold
reply and candidates, and the loss terms of one context.

One context's continuations run in one batched forward. With ``shared_context`` the context
runs once and its KV cache is repeated to every continuation (same values and gradients as
repeating the context on every row, tested; cheaper when the context is long).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..adapters import base_model
from ..beam_search import forward_kwargs, returned_cache
from ..lm import Generator, gold_nll
from .config import CalibrationLossConfig
from .losses import calibration_loss, token_nll


def continuation_logprobs(
    model: torch.nn.Module,
    context_ids: Sequence[int],
    continuations: Sequence[Sequence[int]],
    *,
    shared_context: bool = True,
    pad_token_id: int = 0,
) -> tuple[Tensor, Tensor]:
    """Token log-probabilities of N continuations of one context, in one batched forward.

    ``shared_context=True``: the context runs once (batch 1); its KV cache is repeated to N
    rows and the continuations run on top of it. ``False`` (naive): every row is
    ``context + continuation``. Both give the same values and gradients (tested); the shared
    path saves ``(N - 1) * |context|`` token positions of compute.

    Args:
        model: a causal LM; runs in whatever mode it is in (train: dropout on).
        context_ids: the prompt's token ids (>= 1 token).
        continuations: N lists of >= 1 token ids each.
        pad_token_id: filler for the right padding (masked out).

    Returns:
        ``(logprobs, mask)``, both (N, T) with T the longest continuation:
        ``logprobs[n, t] = log G(y_t | context, y_<t)`` of continuation n, 0 on padding;
        ``mask`` 1 on real tokens.
    """
    if not context_ids:
        raise ValueError("the context must have at least one token")
    if not continuations or any(len(c) == 0 for c in continuations):
        raise ValueError("every continuation must have at least one token")
    cache_name, extra, takes_position_ids = forward_kwargs(base_model(model))
    device = next(model.parameters()).device
    N, Tc = len(continuations), len(context_ids)
    T = max(len(c) for c in continuations)
    targets = torch.full((N, T), pad_token_id, dtype=torch.long, device=device)  # (N, T)
    mask = torch.zeros((N, T), dtype=torch.long, device=device)
    for n, c in enumerate(continuations):
        targets[n, : len(c)] = torch.tensor(list(c), dtype=torch.long)
        mask[n, : len(c)] = 1
    context = torch.tensor([list(context_ids)], dtype=torch.long, device=device)  # (1, Tc)

    if shared_context:
        kwargs: dict[str, Any] = {}
        if takes_position_ids:
            kwargs["position_ids"] = torch.arange(Tc, device=device)[None]
        out = model(
            input_ids=context,
            attention_mask=torch.ones_like(context),
            use_cache=True,
            **extra,
            **kwargs,
        )
        first = out.logits[:, -1:, :]  # (1, 1, V): predicts y_1
        cache = _repeat_cache(returned_cache(out, cache_name), N)  # rows (1 -> N)
        kwargs = {cache_name: cache}
        if takes_position_ids:
            kwargs["position_ids"] = (Tc + torch.arange(T - 1, device=device))[None].expand(N, -1)
        if T > 1:
            rest = model(
                input_ids=targets[:, :-1],
                attention_mask=torch.cat([mask.new_ones((N, Tc)), mask[:, :-1]], dim=1),
                use_cache=True,
                **kwargs,
            ).logits  # (N, T-1, V): predicts y_2 .. y_T
            logits = torch.cat([first.expand(N, -1, -1), rest], dim=1)  # (N, T, V)
        else:
            logits = first.expand(N, -1, -1)
    else:
        input_ids = torch.cat([context.expand(N, -1), targets], dim=1)  # (N, Tc+T)
        attention = torch.cat([mask.new_ones((N, Tc)), mask], dim=1)
        kwargs = {}
        if takes_position_ids:
            kwargs["position_ids"] = torch.arange(Tc + T, device=device)[None].expand(N, -1)
        logits = model(
            input_ids=input_ids, attention_mask=attention, use_cache=False, **kwargs
        ).logits[:, Tc - 1 : Tc + T - 1]  # (N, T, V): position Tc-1 predicts y_1
    logprobs = torch.log_softmax(logits.float() if logits.dtype != torch.float64 else logits, -1)
    token_logprobs = logprobs.gather(-1, targets[..., None]).squeeze(-1)  # (N, T)
    return token_logprobs * mask.to(token_logprobs.dtype), mask


def _repeat_cache(cache: Any, n: int) -> Any:
    """The KV cache of one row repeated to ``n`` rows (differentiable: no in-place copy)."""
    if hasattr(cache, "batch_repeat_interleave"):
        cache.batch_repeat_interleave(n)  # a transformers `Cache`: replaces its tensors
        return cache
    return tuple(tuple(t.repeat_interleave(n, dim=0) for t in layer) for layer in cache)


@dataclasses.dataclass
class EncodedExample:
    """One training context as token ids: prompt, gold, candidates best first."""

    prompt: list[int]
    gold: list[int]
    candidates: list[list[int]]


def encode_example(
    generator: Generator, row: dict, mle_target: str = "reference"
) -> EncodedExample:
    """A candidate row (:func:`~bayespref.calibration.candidates.read_candidates`) as token
    ids, in the generator's one prompt format.

    ``mle_target`` (``loss.mle_target``) picks the ``gold`` the MLE term trains on: the row's
    reference reply, or ``top-candidate``, its best-ranked candidate (which also stays in the
    ranked list). Raises ValueError when the row has no such reply.
    """
    if mle_target == "top-candidate":
        if not row["candidates"]:
            raise ValueError(f"context {row['id']!r} has no candidates to take the top one of")
        gold = row["candidates"][0]["text"]
    elif mle_target == "reference":
        gold = row.get("gold")
        if gold is None:
            raise ValueError(
                f"context {row['id']!r} has no reference reply ('gold'); "
                "loss.mle_target=top-candidate trains without one"
            )
    else:
        raise ValueError(f"mle_target must be reference|top-candidate, got {mle_target!r}")
    return EncodedExample(
        prompt=generator.prompt_ids(row["context"]),
        gold=generator.target_ids(gold),
        candidates=[generator.target_ids(c["text"]) for c in row["candidates"]],
    )


def example_loss(
    model: torch.nn.Module,
    example: EncodedExample,
    loss: CalibrationLossConfig,
    pad_token_id: int,
    forward: str = "shared-context",
) -> dict[str, Tensor]:
    """The loss terms of one context: gold + its candidates in one batched forward.

    With ``rank_weight == gold_weight == 0`` (gold MLE only, the calibration study's control)
    the candidates cannot change the loss or its gradient, so only the gold reply is forwarded.

    Returns ``{"loss", "rank", "mle", "gold"}``, each a scalar tensor.
    """
    if loss.rank_weight == 0 and loss.gold_weight == 0:
        logprobs, mask = continuation_logprobs(
            model, example.prompt, [example.gold], shared_context=False, pad_token_id=pad_token_id
        )  # (1, T)
        mle = token_nll(logprobs, mask)[0]
        zero = torch.zeros_like(mle)
        return {"loss": loss.mle_weight * mle, "rank": zero, "mle": mle, "gold": zero}
    logprobs, mask = continuation_logprobs(
        model,
        example.prompt,
        [example.gold, *example.candidates],
        shared_context=forward == "shared-context",
        pad_token_id=pad_token_id,
    )  # (1 + K, T)
    K = len(example.candidates)
    present = torch.ones((1, K), dtype=torch.long, device=mask.device)
    terms = calibration_loss(
        logprobs[:1], mask[:1], logprobs[None, 1:], mask[None, 1:], present, loss
    )
    return {k: v[0] for k, v in terms.items()}


def pooled_gold_nll(
    model: torch.nn.Module, examples: list[tuple[list[int], list[int]]], pad_token_id: int
) -> float | None:
    """Held-out gold NLL per token (all tokens of all gold replies pooled); None if none."""
    if not examples:
        return None
    sums, counts = gold_nll(model, examples, pad_token_id)
    return float(sums.sum() / counts.sum())


def term_gradients(
    model: torch.nn.Module,
    examples: Sequence[EncodedExample],
    loss: CalibrationLossConfig,
    params: Sequence[torch.nn.Parameter],
    pad_token_id: int,
    forward: str = "shared-context",
) -> dict[str, float]:
    """Where the calibration gradient goes: the MLE and ranking terms' gradients apart.

    ``g_mle = d(sum_x w_mle * NLL_x(gold)) / d params`` and
    ``g_rank = d(sum_x w_rank * L_rank,x) / d params`` over ``examples`` (each weighted as
    in the loss, so ``g_mle + g_rank`` is the step's gradient without the gold term), with
    ``torch.autograd.grad``: nothing accumulates in ``.grad``.

    Returns ``{"grad_norm_mle": ||g_mle||, "grad_norm_rank": ||g_rank||,
    "grad_cos_rank_mle": cos(g_rank, g_mle)}`` (the cosine NaN when a gradient is zero).
    Raises ValueError when ``loss.rank_weight`` is 0 (no ranking term to measure).
    """
    if loss.rank_weight <= 0:
        raise ValueError("term_gradients needs loss.rank_weight > 0")
    params = list(params)
    totals = {name: [torch.zeros_like(p) for p in params] for name in ("mle", "rank")}
    weights = {"mle": loss.mle_weight, "rank": loss.rank_weight}
    for example in examples:
        terms = example_loss(model, example, loss, pad_token_id, forward)
        for name, weight in weights.items():
            grads = torch.autograd.grad(
                weight * terms[name], params, retain_graph=name == "mle", allow_unused=True
            )
            for total, grad in zip(totals[name], grads, strict=True):
                if grad is not None:
                    total += grad
    flat = {name: torch.cat([g.flatten().double() for g in gs]) for name, gs in totals.items()}
    mle_norm, rank_norm = flat["mle"].norm(), flat["rank"].norm()
    cosine = (
        float(flat["rank"] @ flat["mle"] / (mle_norm * rank_norm))
        if mle_norm > 0 and rank_norm > 0
        else float("nan")
    )
    return {
        "grad_norm_mle": float(mle_norm),
        "grad_norm_rank": float(rank_norm),
        "grad_cos_rank_mle": cosine,
    }
