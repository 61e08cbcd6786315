"""Calibrate a generator with a preference model (METHOD.md section 5; BRIO-style).

Two halves, each a CLI subcommand (``bayespref generate`` and ``bayespref calibrate``):

1. :func:`build_candidates`: for every training context, ``K`` candidates from diverse beam
   search (:mod:`bayespref.generation`), scored by a trained :class:`PreferenceModel`, sorted
   best to worst, identical texts kept once with a ``count``. Written as JSONL, one line per
   context::

       {"id", "context", "gold", "candidates": [{"text", "score", "count"}, ...],
        "num_generated", "num_unique"}

   with the settings in a sidecar ``<stem>.meta.json`` (:func:`read_candidates` reads both).
   The file is a cache: rerun with the same settings reuses it; an interrupted run resumes
   after the last complete line.
2. :func:`calibrate`: fine-tune the generator (fully or with LoRA) on
   ``L = w_mle * NLL(gold) + w_rank * L_rank (+ w_gold * L_gold)`` and write
   ``<run>/generator/``, loadable by ``AutoModelForCausalLM.from_pretrained``.

Loading the generator, the prompt format (one for every step) and the gold NLL live in
:mod:`bayespref.lm`; the context sources in :mod:`bayespref.data.contexts`.

The recipe in :func:`calibrate` reads top to bottom like :func:`bayespref.train.train`: setup
-> candidates -> resume -> loop (contexts, loss, step, evaluate, checkpoint) -> save generator.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import Tensor

from .checkpoint import (
    CheckpointError,
    atomic_write_dir,
    latest_checkpoint,
    load_optimizer,
    prune_checkpoints,
    save_optimizer,
    step_dir_name,
    verify_manifest,
)
from .config import ConfigError, _field, apply_overrides, from_dict, save_config
from .data.contexts import convabuse_contexts, read_context_jsonl, subsample, synthetic_contexts
from .data.schema import DataError
from .beam_search import DiverseBeamConfig, diverse_beam_search, forward_kwargs, returned_cache
from .lm import Generator, GeneratorConfig, gold_nll, left_pad, load_generator, resolve_generator
from .safety import GracefulStop, RunLock, RunLockedError, TrainingInterrupted
from .train import (
    NonFiniteError,
    RunExistsError,
    _jsonable,
    _truncate_metrics,
    _tupled,
    lr_at,
    micro_batch_indices,
    seed_everything,
)

logger = logging.getLogger(__name__)

CANDIDATES_FORMAT = "bayespref-candidates/1"
SCORINGS = ("length-normalised", "mean-prob")


class CandidateCacheError(ConfigError):
    """A candidate file that does not belong to these settings, or is not in order."""


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class ContextsConfig:
    source: str = _field(
        "synthetic",
        "synthetic (make_synthetic_contexts) | jsonl ({id, context, gold} rows) | convabuse "
        "(split CSV: context up to the agent's turn, gold = the real user turn, kept only where "
        "the annotators' majority found no abuse)",
    )
    path: str | None = _field(None, "the JSONL file or ConvAbuse CSV (not for synthetic)")
    n: int | None = _field(
        200, "synthetic: number of contexts; jsonl/convabuse: keep at most this many (null: all)"
    )
    seed: int = _field(1, "synthetic: generator seed; jsonl/convabuse: seed of the subsample")
    n_eval: int | None = _field(None, "held-out contexts for evaluation (overrides eval_fraction)")
    eval_fraction: float = _field(0.1, "fraction held out for evaluation when n_eval is null")

    def __post_init__(self):
        if self.source not in ("synthetic", "jsonl", "convabuse"):
            raise ConfigError(f"data.source must be synthetic|jsonl|convabuse, got {self.source!r}")
        if self.source != "synthetic" and not self.path:
            raise ConfigError(f"data.path is required for data.source={self.source}")
        if self.n is not None and self.n < 1:
            raise ConfigError(f"data.n must be >= 1 or null, got {self.n}")
        if self.n_eval is not None and self.n_eval < 0:
            raise ConfigError(f"data.n_eval must be >= 0, got {self.n_eval}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclasses.dataclass
class ScorerConfig:
    run: str | None = _field(
        None,
        "preference model run directory (train one with: bayespref train --config ...); null: "
        "rank by the generator's own beam score (texts to re-score later: rescore_candidates)",
    )
    checkpoint: str = _field("best", "best | last | a folder under <run>/checkpoint/")
    rule: str = _field("expected-utility", "expected-utility | worst-class (METHOD section 4)")
    batch_size: int = _field(64, "pairs per preference-model forward")

    def __post_init__(self):
        if self.rule not in ("expected-utility", "worst-class"):
            raise ConfigError(f"scorer.rule must be expected-utility|worst-class, got {self.rule}")


@dataclasses.dataclass
class DecodingConfig:
    num_beams: int = _field(4, "K: candidates per context (METHOD reference: 10)")
    num_beam_groups: int = _field(4, "G: diverse beam groups; must divide num_beams")
    diversity_penalty: float = _field(4.0, "delta: Hamming diversity penalty between groups")
    max_new_tokens: int = _field(40, "longest candidate, in tokens")
    min_new_tokens: int = _field(10, "eos is forbidden before this many new tokens")
    length_penalty: float = _field(1.0, "beam score = sum log p / n_new ** length_penalty")
    early_stopping: bool = _field(False, "stop a group once it has K/G finished hypotheses")
    batch_size: int = _field(8, "contexts searched together")
    cache: str | None = _field(
        None, "candidate JSONL (default: <run>/candidates.jsonl); reused when settings match"
    )

    def beam_config(self, eos_token_id: int, pad_token_id: int) -> DiverseBeamConfig:
        return DiverseBeamConfig(
            num_beams=self.num_beams,
            num_beam_groups=self.num_beam_groups,
            diversity_penalty=self.diversity_penalty,
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            length_penalty=self.length_penalty,
            early_stopping=self.early_stopping,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
        )

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError("decoding.batch_size must be >= 1")
        try:  # the search's own checks, with placeholder token ids
            self.beam_config(0, 0)
        except ValueError as err:
            raise ConfigError(f"decoding: {err}") from err


@dataclasses.dataclass
class CalibrationLossConfig:
    margin: float = _field(0.001, "lambda: rank margin per position, L_r = sum_{i<j} ...")
    rank_weight: float = _field(1.0, "w_rank (reference: 1 for dialogue, 0.72 for RoT)")
    mle_weight: float = _field(1.0, "w_mle: weight of the gold reply's token NLL")
    gold_weight: float = _field(0.0, "w_gold: gold must score above every candidate (0: off)")
    gold_margin: float = _field(0.0, "lambda_gold in sum_k max(0, P(y_k) - P(gold) + lambda_gold)")
    scoring: str = _field(
        "length-normalised",
        "P(y): length-normalised (sum log p / |y|^a, the report) | mean-prob (reference code)",
    )
    length_penalty: float = _field(1.0, "a in P(y) = sum log p / |y|^a")

    def __post_init__(self):
        if self.scoring not in SCORINGS:
            raise ConfigError(f"loss.scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if min(self.rank_weight, self.mle_weight, self.gold_weight, self.margin) < 0:
            raise ConfigError("loss weights and margin must be >= 0")


@dataclasses.dataclass
class CalibrationOptimConfig:
    lr: float = _field(1e-5, "peak learning rate (AdamW); LoRA wants more, e.g. 1e-4")
    weight_decay: float = _field(0.0, "AdamW weight decay (not on biases and norms)")
    epochs: float = _field(1.0, "passes over the training contexts (fractions allowed)")
    max_steps: int | None = _field(None, "optimiser steps; overrides epochs when set")
    batch_size: int = _field(2, "contexts per micro-batch (each: gold + its candidates)")
    grad_accum: int = _field(4, "micro-batches per optimiser step")
    warmup_ratio: float = _field(0.1, "fraction of optimiser steps of linear warmup")
    max_grad_norm: float | None = _field(1.0, "gradient clipping (null: off)")
    adam_betas: list = _field([0.9, 0.999], "AdamW betas")

    def __post_init__(self):
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("optim.batch_size and optim.grad_accum must be >= 1")
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"optim.max_steps must be >= 1, got {self.max_steps}")


@dataclasses.dataclass
class PeftConfig:
    method: str = _field("none", "none (full fine-tune) | lora (merged into the saved model)")
    r: int = _field(8, "LoRA rank")
    alpha: int = _field(16, "LoRA scaling")
    dropout: float = _field(0.05, "LoRA dropout")
    target_modules: list | None = _field(None, "LoRA targets (default: peft's for the model)")

    def __post_init__(self):
        if self.method not in ("none", "lora"):
            raise ConfigError(f"peft.method must be none|lora, got {self.method!r}")


@dataclasses.dataclass
class CalibrationConfig:
    name: str = _field("calibrate", "run name: outputs go to <output_dir>/<name>/")
    output_dir: str = _field("runs", "parent folder of run directories")
    seed: int = _field(0, "the one seed, set at the entry point")
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    data: ContextsConfig = dataclasses.field(default_factory=ContextsConfig)
    scorer: ScorerConfig = dataclasses.field(default_factory=ScorerConfig)
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    loss: CalibrationLossConfig = dataclasses.field(default_factory=CalibrationLossConfig)
    optim: CalibrationOptimConfig = dataclasses.field(default_factory=CalibrationOptimConfig)
    peft: PeftConfig = dataclasses.field(default_factory=PeftConfig)
    forward: str = _field(
        "shared-context",
        "shared-context (run the context once, reuse its KV cache for gold + candidates) | "
        "naive (context repeated on every row); same losses and gradients",
    )
    eval_every: int = _field(50, "optimiser steps between held-out gold NLL evaluations")
    save_every: int | None = _field(None, "optimiser steps between checkpoints (default: eval)")
    keep_last: int = _field(2, "training checkpoints kept")
    progress: bool = _field(True, "show progress bars")

    def __post_init__(self):
        if self.forward not in ("shared-context", "naive"):
            raise ConfigError(f"forward must be shared-context|naive, got {self.forward!r}")
        if self.keep_last < 1 or self.eval_every < 1:
            raise ConfigError("keep_last and eval_every must be >= 1")
        if self.save_every is not None and self.save_every < 1:
            raise ConfigError("save_every must be >= 1 or null")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"name must be a plain folder name, got {self.name!r}")

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def candidates_path(self) -> Path:
        if self.decoding.cache:
            return Path(self.decoding.cache)
        return self.run_dir / "candidates.jsonl"


def load_calibration_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> CalibrationConfig:
    """A YAML config (or the defaults when ``path`` is None) with ``a.b=value`` overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    return from_dict(CalibrationConfig, apply_overrides(data, overrides or []))


# ---------------------------------------------------------------------------------------------
# Losses: pure functions, per example (B,), the caller reduces


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


# ---------------------------------------------------------------------------------------------
# Scoring continuations of one context with the generator


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
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache_name, extra, takes_position_ids = forward_kwargs(base)
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


# ---------------------------------------------------------------------------------------------
# Contexts


def load_contexts(data: ContextsConfig) -> list[dict]:
    """Rows ``{"id", "context", "gold"}`` from the configured source (see ContextsConfig)."""
    if data.source == "synthetic":
        return synthetic_contexts(data.n or 200, seed=data.seed)
    if data.source == "jsonl":
        rows = read_context_jsonl(data.path, require_gold=True)
    else:
        rows = convabuse_contexts(data.path)
    return subsample(rows, data.n, data.seed)


def split_contexts(rows: list[dict], data: ContextsConfig, seed: int) -> tuple[list, list]:
    """(train, eval): a seeded random hold-out of ``n_eval`` (or ``eval_fraction``) contexts."""
    n_eval = data.n_eval
    if n_eval is None:
        n_eval = int(round(data.eval_fraction * len(rows)))
    if n_eval >= len(rows):
        raise ConfigError(f"n_eval={n_eval} leaves no training contexts out of {len(rows)}")
    order = np.random.default_rng([seed, 0xCA1]).permutation(len(rows))
    held = set(order[:n_eval].tolist())
    train = [r for i, r in enumerate(rows) if i not in held]
    held_out = [r for i, r in enumerate(rows) if i in held]
    return train, held_out


# ---------------------------------------------------------------------------------------------
# Candidates


def dedupe_and_rank(texts: Sequence[str], scores: Sequence[float]) -> list[dict]:
    """``[{"text", "score", "count"}]`` best first; identical texts kept once and counted
    (METHOD section 5 step 2). Equal scores keep the search's order (stable sort)."""
    merged: dict[str, dict] = {}
    for text, score in zip(texts, scores, strict=True):
        if text in merged:
            merged[text]["count"] += 1
        else:
            merged[text] = {"text": text, "score": float(score), "count": 1}
    return sorted(merged.values(), key=lambda c: -c["score"])


def candidates_meta_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def read_candidates(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """(meta, rows) of a candidate file: the settings in ``<stem>.meta.json`` and one row per
    context, ``{"id", "context", "gold", "candidates": [{"text", "score", "count"}, ...],
    "num_generated", "num_unique"}``, candidates best first as written.

    Raises :class:`DataError` with the file (and line) when the settings file is missing, a
    line is cut short, or a line is not a valid candidate row (see
    :func:`candidate_row_problem`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", str(path))
    meta_path = candidates_meta_path(path)
    if not meta_path.is_file():
        raise DataError(f"no settings file {meta_path.name} beside the candidates", str(path))
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"not valid JSON: {err}", str(meta_path)) from None
    if not meta.get("complete", True):
        logger.warning("%s: the candidate file is incomplete (an interrupted run)", path)
    rows, _ = _read_candidate_rows(path, tolerate_partial_last=False)
    return meta, rows


def candidate_row_problem(row: Any) -> str | None:
    """What is wrong with one parsed candidate row, or None when it is valid."""
    if not isinstance(row, dict):
        return "each line must be a JSON object"
    if not isinstance(row.get("id"), str):
        return "'id' must be a string"
    context = row.get("context")
    if not (
        isinstance(context, str)
        or (isinstance(context, list) and all(isinstance(t, str) for t in context))
    ):
        return "'context' must be a string or a list of strings"
    if row.get("gold") is not None and not isinstance(row["gold"], str):
        return "'gold' must be a string or null"
    candidates = row.get("candidates")
    if not isinstance(candidates, list):
        return "missing or non-list 'candidates'"
    for k, c in enumerate(candidates):
        if not isinstance(c, dict) or not isinstance(c.get("text"), str):
            return f"candidates[{k}]: missing or non-string 'text'"
        score = c.get("score")
        if (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            return f"candidates[{k}]: 'score' must be a finite number, got {score!r}"
        count = c.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            return f"candidates[{k}]: 'count' must be a positive integer, got {count!r}"
    for key in ("num_generated", "num_unique"):
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"'{key}' must be an integer"
    return None


def _read_candidate_rows(path: Path, tolerate_partial_last: bool) -> tuple[list[dict], int]:
    """Rows and the byte length of the complete lines (a crash can cut the last line)."""
    raw = path.read_bytes()
    complete = raw.rfind(b"\n") + 1
    if complete < len(raw) and not tolerate_partial_last:
        raise DataError("the last line is incomplete (an interrupted run?)", str(path))
    rows = []
    for line_no, line in enumerate(raw[:complete].split(b"\n")[:-1], start=1):
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise DataError(f"not UTF-8 ({err.reason})", str(path), line_no) from None
        except ValueError as err:
            raise DataError(f"not valid JSON: {err}", str(path), line_no) from None
        problem = candidate_row_problem(row)
        if problem is not None:
            raise DataError(f"not a candidate row: {problem}", str(path), line_no)
        rows.append(row)
    return rows, complete


def _candidate_settings(config: CalibrationConfig, train_rows: list[dict]) -> dict:
    """What the candidates depend on; a cached file is reused only when this matches."""
    path, gguf_file, eos = resolve_generator(config.generator)
    g = config.generator
    decoding = dataclasses.asdict(config.decoding)
    decoding.pop("cache")
    decoding.pop("batch_size")  # batching does not change the search's output
    ids = "\n".join(r["id"] for r in train_rows)
    return {
        "format": CANDIDATES_FORMAT,
        "generator": {
            "name": g.name,
            "path": str(path),
            "gguf_file": gguf_file,
            "eos_token": eos,
            "chat_template": g.chat_template,
            "max_context_tokens": g.max_context_tokens,
            "dtype": g.dtype,
        },
        "scorer": {
            "run": config.scorer.run,
            "checkpoint": config.scorer.checkpoint,
            "rule": config.scorer.rule,
            "fingerprint": _scorer_fingerprint(config.scorer),
        },
        "decoding": decoding,
        "contexts": {
            **dataclasses.asdict(config.data),
            "split_seed": config.seed,
            "num_train": len(train_rows),
            "ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
        },
    }


def _scorer_fingerprint(scorer: ScorerConfig) -> str | None:
    from .model import find_model_dir

    if scorer.run is None:
        return None
    folder = find_model_dir(Path(scorer.run), scorer.checkpoint)
    for candidate in (folder / "manifest.json", folder.parent / "manifest.json"):
        if candidate.is_file():
            return hashlib.sha256(candidate.read_bytes()).hexdigest()
    weights = folder / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None


def build_candidates(config: CalibrationConfig) -> Path:
    """Generate, score, rank and cache the candidates of the training contexts.

    Returns the JSONL path (``config.candidates_path``). Reuses a complete file with the same
    settings, continues an interrupted one, and refuses one made with other settings.
    """
    seed_everything(config.seed)
    train_rows, _ = split_contexts(load_contexts(config.data), config.data, config.seed)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _build_candidates_sharded(config, train_rows)
    with RunLock(config.run_dir):  # one writer: calibrate on the same run waits its turn
        return _build_candidates(config, train_rows, generator=None)


def _build_candidates_sharded(config: CalibrationConfig, train_rows: list[dict]) -> Path:
    """:func:`build_candidates` under ``torchrun``/``accelerate launch``: each process searches
    a contiguous share of the contexts still to do into ``<file>.part<rank>`` (resumable on
    its own), then the main process appends the parts in rank order: the candidates one process
    writes, in the same order (scores agree up to the float rounding of other batches)."""
    from contextlib import nullcontext

    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=not torch.cuda.is_available())
    path = config.candidates_path
    lock = RunLock(config.run_dir) if state.is_main_process else nullcontext()
    with lock:
        status = [None]
        if state.is_main_process:  # check the cache; `_build_candidates` with nothing to do
            status = [_prepare_candidate_cache(config, train_rows)]
        status = broadcast_object_list(status)[0]
        if status == "complete":
            return path
        with state.split_between_processes(train_rows[status:]) as share:
            part = path.with_name(f"{path.name}.part{state.process_index}")
            done = (
                _read_candidate_rows(part, tolerate_partial_last=True)
                if part.is_file()
                else ([], 0)
            )
            rows, complete = done
            if part.is_file() and complete < part.stat().st_size:
                with part.open("r+b") as fh:
                    fh.truncate(complete)
            if [r["id"] for r in rows] != [r["id"] for r in share[: len(rows)]]:
                part.unlink()  # another split of the work (other process count): redo the share
                rows = []
            todo = share[len(rows) :]
            if todo:
                generator = load_generator(
                    dataclasses.replace(config.generator, device=str(state.device))
                )
                scorer = _load_scorer(config, generator)
                _generate_into(part, todo, generator, scorer, config)
            elif not part.exists():
                part.write_bytes(b"")
        state.wait_for_everyone()
        if state.is_main_process:
            with path.open("ab") as fh:
                for rank in range(state.num_processes):
                    part = path.with_name(f"{path.name}.part{rank}")
                    fh.write(part.read_bytes())
            for rank in range(state.num_processes):
                path.with_name(f"{path.name}.part{rank}").unlink()
            _build_candidates(config, train_rows, generator=None)  # verify + mark complete
        state.wait_for_everyone()
    return path


def _prepare_candidate_cache(config: CalibrationConfig, train_rows: list[dict]) -> int | str:
    """Check or start the cache file: the number of contexts already in it, or "complete"."""
    path = config.candidates_path
    meta_path = candidates_meta_path(path)
    settings = _candidate_settings(config, train_rows)
    if meta_path.is_file() and path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("settings") != settings:
            raise CandidateCacheError(
                f"{path} was built with other settings ({_diff(meta.get('settings'), settings)}); "
                f"delete it and {meta_path.name}, or set decoding.cache to another file"
            )
        done, complete = _read_candidate_rows(path, tolerate_partial_last=True)
        if complete < path.stat().st_size:
            logger.warning("%s: dropping an incomplete last line (interrupted run)", path)
            with path.open("r+b") as fh:
                fh.truncate(complete)
        expected = [r["id"] for r in train_rows[: len(done)]]
        if [r["id"] for r in done] != expected or len(done) > len(train_rows):
            raise CandidateCacheError(
                f"{path}: its contexts are not the training contexts in order; delete it"
            )
        if meta.get("complete") and len(done) == len(train_rows):
            logger.info("reusing %d cached candidate lists from %s", len(done), path)
            return "complete"
        logger.info("%s: resuming after %d of %d contexts", path, len(done), len(train_rows))
        return len(done)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    _write_json_atomic(meta_path, {"settings": settings, "complete": False})
    return 0


def _load_scorer(config: CalibrationConfig, generator: Generator):
    """The ranking preference model on the generator's device (None: rank by beam score)."""
    if config.scorer.run is None:
        return None
    from .model import PreferenceModel

    scorer = PreferenceModel.from_run(config.scorer.run, checkpoint=config.scorer.checkpoint)
    return scorer.to(next(generator.model.parameters()).device)


def _build_candidates(
    config: CalibrationConfig, train_rows: list[dict], generator: Generator | None
) -> Path:
    path = config.candidates_path
    settings = _candidate_settings(config, train_rows)
    done = _prepare_candidate_cache(config, train_rows)
    if done == "complete":
        return path
    todo = train_rows[done:]
    if todo:
        generator = generator or load_generator(config.generator)
        scorer = _load_scorer(config, generator)
        _generate_into(path, todo, generator, scorer, config)
        del scorer
    rows, _ = _read_candidate_rows(path, tolerate_partial_last=False)
    if [r["id"] for r in rows] != [r["id"] for r in train_rows]:
        raise CandidateCacheError(f"{path}: verification failed, contexts missing or out of order")
    meta = {
        "settings": settings,
        "complete": True,
        "num_contexts": len(rows),
        "num_generated": sum(r["num_generated"] for r in rows),
        "num_unique": sum(r["num_unique"] for r in rows),
    }
    _write_json_atomic(candidates_meta_path(path), meta)
    logger.info(
        "candidates: %d contexts, %d unique of %d generated -> %s",
        len(rows),
        meta["num_unique"],
        meta["num_generated"],
        path,
    )
    return path


def rescore_candidates(config: CalibrationConfig, source: str | os.PathLike) -> Path:
    """Re-rank the texts of an existing candidate file with ``config.scorer``.

    ``source`` must come from the same generator, decoding and contexts as ``config`` (its
    scorer may differ, or be none: see ``scorer.run``); nothing is generated. Each row's
    texts, duplicates included, are scored again and ranked by :func:`dedupe_and_rank` (equal
    scores keep the source's order). The result goes to ``config.candidates_path`` in the same
    format, with the settings ``config`` would have written, so :func:`calibrate` and
    ``export-pairs`` read it as if :func:`build_candidates` had made it. A complete file with
    these settings is reused.
    """
    from .model import PreferenceModel

    if config.scorer.run is None:
        raise ConfigError("rescore_candidates needs scorer.run: a preference model run")
    train_rows, _ = split_contexts(load_contexts(config.data), config.data, config.seed)
    settings = _candidate_settings(config, train_rows)
    path, meta_path = config.candidates_path, candidates_meta_path(config.candidates_path)
    if meta_path.is_file() and path.is_file():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("settings") != settings:
            raise CandidateCacheError(
                f"{path} was built with other settings ({_diff(meta.get('settings'), settings)})"
                f"; delete it and {meta_path.name}"
            )
        if meta.get("complete"):
            logger.info("reusing re-scored candidates %s", path)
            return path
    source_meta, source_rows = read_candidates(source)
    wanted = {k: v for k, v in settings.items() if k != "scorer"}
    have = {k: v for k, v in source_meta.get("settings", {}).items() if k != "scorer"}
    if have != wanted or not source_meta.get("complete"):
        raise CandidateCacheError(
            f"{source} is incomplete or holds other candidates ({_diff(have, wanted)})"
        )
    scorer = PreferenceModel.from_run(config.scorer.run, checkpoint=config.scorer.checkpoint)
    texts = [
        [c["text"] for c in row["candidates"] for _ in range(c["count"])] for row in source_rows
    ]
    contexts = [row["context"] for row, t in zip(source_rows, texts) for _ in t]
    flat = [text for t in texts for text in t]
    scores = scorer.score(
        contexts, flat, rule=config.scorer.rule, batch_size=config.scorer.batch_size
    )
    lines, start = [], 0
    for row, row_texts in zip(source_rows, texts):
        ranked = dedupe_and_rank(row_texts, scores[start : start + len(row_texts)])
        start += len(row_texts)
        record = {**row, "candidates": ranked, "num_unique": len(ranked)}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(path)
    meta = {
        "settings": settings,
        "complete": True,
        "num_contexts": len(source_rows),
        "num_generated": sum(r["num_generated"] for r in source_rows),
        "num_unique": sum(r["num_unique"] for r in source_rows),
        "rescored_from": str(source),
    }
    _write_json_atomic(meta_path, meta)
    logger.info("re-scored %d candidate lists from %s -> %s", len(source_rows), source, path)
    return path


def _generate_into(path: Path, rows: list[dict], generator: Generator, scorer, config) -> None:
    from tqdm.auto import tqdm

    beam = config.decoding.beam_config(generator.eos_token_id, generator.pad_token_id)
    device = next(generator.model.parameters()).device
    K = beam.num_return_sequences
    bar = tqdm(total=len(rows), disable=not config.progress, desc="generate", unit="context")
    with path.open("ab") as fh:
        for start in range(0, len(rows), config.decoding.batch_size):
            chunk = rows[start : start + config.decoding.batch_size]
            input_ids, attention_mask = left_pad(
                [generator.prompt_ids(r["context"]) for r in chunk], generator.pad_token_id
            )
            out = diverse_beam_search(
                generator.model, input_ids.to(device), attention_mask.to(device), beam
            )
            new = out.sequences[:, input_ids.shape[1] :].tolist()  # (B*K, T_new)
            texts = [generator.decode_new(tokens)[0] for tokens in new]
            contexts = [r["context"] for r in chunk for _ in range(K)]
            if scorer is None:  # the generator's own ranking: its beam score
                scores = out.sequence_scores.tolist()
            else:
                scores = scorer.score(
                    contexts, texts, rule=config.scorer.rule, batch_size=config.scorer.batch_size
                )
            lines = []
            for b, row in enumerate(chunk):
                ranked = dedupe_and_rank(texts[b * K : (b + 1) * K], scores[b * K : (b + 1) * K])
                record = {
                    "id": row["id"],
                    "context": row["context"],
                    "gold": row["gold"],
                    "candidates": ranked,
                    "num_generated": K,
                    "num_unique": len(ranked),
                }
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            fh.write("".join(lines).encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())  # a crash loses at most the batch being searched
            bar.update(len(chunk))
    bar.close()


def _write_json_atomic(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(path)


def _diff(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        parts = [
            _diff(old.get(k), new.get(k), f"{prefix}{k}.")
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]
        return "; ".join(p for p in parts if p)
    return f"{prefix.rstrip('.')}: {old!r} -> {new!r}"


# ---------------------------------------------------------------------------------------------
# The recipe


@dataclasses.dataclass
class CalibrationResult:
    run_dir: Path
    generator_dir: Path
    candidates: Path
    steps: int
    eval_gold_nll: float | None  # after training
    initial_eval_gold_nll: float | None  # before training (None when resumed)


def calibrate(config: CalibrationConfig, resume: bool = False) -> CalibrationResult:
    """Calibrate the generator as configured; outputs go to ``config.run_dir``.

    With ``resume=True`` the newest intact checkpoint is loaded (weights, optimiser, RNG) and
    the run ends with the same weights as an uninterrupted one.
    """
    seed_everything(config.seed)
    with RunLock(config.run_dir), GracefulStop() as stop:
        return _calibrate(config, resume, stop)


def _calibrate(config: CalibrationConfig, resume: bool, stop: GracefulStop) -> CalibrationResult:
    # ---- setup
    run_dir = config.run_dir
    ckpt_root = run_dir / "checkpoint"
    resume_from = latest_checkpoint(ckpt_root) if resume else None
    if not resume and (ckpt_root.exists() or (run_dir / "metrics.jsonl").exists()):
        raise RunExistsError(
            f"{run_dir} already holds a calibration run: pass --resume to continue it, or "
            f"choose another name (name=...)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    train_rows, eval_rows = split_contexts(load_contexts(config.data), config.data, config.seed)
    generator = load_generator(config.generator)

    # ---- candidates (from the base generator, before any update)
    candidates_path = _build_candidates(config, train_rows, generator)
    _, candidate_rows = read_candidates(candidates_path)
    examples = [_encode_example(generator, row) for row in candidate_rows]
    eval_examples = [
        (generator.prompt_ids(r["context"]), generator.target_ids(r["gold"])) for r in eval_rows
    ]

    model = _wrap_peft(generator.model, config.peft)
    optim = config.optim
    micro_per_epoch = len(examples) // optim.batch_size
    if micro_per_epoch == 0:
        raise ConfigError(
            f"{len(examples)} training contexts are fewer than optim.batch_size={optim.batch_size}"
        )
    steps_per_epoch = max(1, micro_per_epoch // optim.grad_accum)
    total_steps = optim.max_steps or max(1, math.ceil(optim.epochs * steps_per_epoch))
    warmup_steps = int(optim.warmup_ratio * total_steps)
    save_every = config.save_every or config.eval_every
    optimizer = torch.optim.AdamW(
        _param_groups(model, optim.weight_decay), lr=optim.lr, betas=tuple(optim.adam_betas)
    )
    step = 0
    initial_nll = None
    metrics_file = run_dir / "metrics.jsonl"

    # ---- resume
    if resume_from is not None:
        step = _load_state(resume_from, model, optimizer)
        _truncate_metrics(metrics_file, step)
        logger.info("resumed from %s (step %d)", resume_from, step)
    else:
        initial_nll = pooled_gold_nll(model, eval_examples, generator.pad_token_id)
        if initial_nll is not None:
            _append_jsonl(metrics_file, {"step": 0, "split": "eval", "gold_nll": initial_nll})

    # ---- loop
    from tqdm.auto import tqdm

    progress = tqdm(
        total=total_steps, initial=step, disable=not config.progress, desc="calibrate", unit="step"
    )
    model.train()
    eval_nll = None
    while step < total_steps:
        step_start = time.perf_counter()
        totals = dict.fromkeys(("loss", "rank", "mle", "gold"), 0.0)
        for micro in range(optim.grad_accum):
            indices = micro_batch_indices(
                step * optim.grad_accum + micro, len(examples), optim.batch_size, 1, 0, config.seed
            )
            for i in indices:
                terms = example_loss(
                    model, examples[i], config.loss, generator.pad_token_id, config.forward
                )
                scale = optim.batch_size * optim.grad_accum
                (terms["loss"] / scale).backward()
                for key, value in terms.items():
                    totals[key] += float(value.detach()) / scale
        max_norm = optim.max_grad_norm if optim.max_grad_norm is not None else math.inf
        params = [p for p in model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        lr = lr_at(step, total_steps, warmup_steps, optim.lr)
        if not (math.isfinite(totals["loss"]) and math.isfinite(grad_norm)):
            raise NonFiniteError(
                f"non-finite loss or gradient at step {step + 1} ({totals}, grad norm "
                f"{grad_norm}); the step was not applied, the last checkpoint is intact"
            )
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{totals['loss']:.4f}")
        record = {"step": step, "split": "train", **totals, "lr": lr, "grad_norm": grad_norm}
        record["epoch"] = step / steps_per_epoch
        record["step_seconds"] = time.perf_counter() - step_start
        _append_jsonl(metrics_file, record)

        is_last = step == total_steps
        if step % config.eval_every == 0 or is_last:
            eval_nll = pooled_gold_nll(model, eval_examples, generator.pad_token_id)
            if eval_nll is not None:
                _append_jsonl(metrics_file, {"step": step, "split": "eval", "gold_nll": eval_nll})
                progress.write(f"step {step}: held-out gold NLL {eval_nll:.4f}")
        stopping = stop.requested and not is_last
        if step % save_every == 0 or is_last or stopping:
            _save_state(ckpt_root, model, optimizer, step, config.keep_last)
        if stopping:
            progress.close()
            raise TrainingInterrupted(
                f"stopped by {stop.signal_name or 'a signal'} at step {step}/{total_steps}; "
                f"continue with: bayespref calibrate --config {run_dir / 'config.yaml'} --resume",
                step,
            )
    progress.close()

    # ---- finish: a plain Hugging Face model folder
    generator_dir = save_generator(model, generator.tokenizer, run_dir / "generator")
    summary = {
        "base_generator": generator.source,
        "scorer": {"run": config.scorer.run, "rule": config.scorer.rule},
        "candidates": str(candidates_path),
        "steps": step,
        "train_contexts": len(examples),
        "eval_contexts": len(eval_examples),
        "initial_eval_gold_nll": initial_nll,
        "final_eval_gold_nll": eval_nll,
        "generator_dir": str(generator_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return CalibrationResult(run_dir, generator_dir, candidates_path, step, eval_nll, initial_nll)


@dataclasses.dataclass
class EncodedExample:
    """One training context as token ids: prompt, gold, candidates best first."""

    prompt: list[int]
    gold: list[int]
    candidates: list[list[int]]


def _encode_example(generator: Generator, row: dict) -> EncodedExample:
    return EncodedExample(
        prompt=generator.prompt_ids(row["context"]),
        gold=generator.target_ids(row["gold"]),
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


def _wrap_peft(model: torch.nn.Module, peft: PeftConfig) -> torch.nn.Module:
    if peft.method == "none":
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        r=peft.r,
        lora_alpha=peft.alpha,
        lora_dropout=peft.dropout,
        target_modules=peft.target_modules,
        task_type=TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, lora)


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _trainable_state(model: torch.nn.Module) -> dict[str, Tensor]:
    return {
        name: p.detach().contiguous().cpu()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def _save_state(ckpt_root: Path, model, optimizer, step: int, keep_last: int) -> None:
    def write(folder: Path) -> None:
        # trainable weights only: everything under full fine-tuning, the adapters under LoRA
        save_file(_trainable_state(model), str(folder / "trainable.safetensors"))
        save_optimizer(optimizer, folder)
        save_file({"torch": torch.get_rng_state()}, str(folder / "rng.safetensors"))
        np_state = np.random.get_state()
        payload = {
            "step": step,
            "python_rng": _jsonable(random.getstate()),
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        (folder / "trainer_state.json").write_text(json.dumps(payload), encoding="utf-8")

    try:
        atomic_write_dir(ckpt_root / step_dir_name(step), write)
    except OSError as err:
        raise CheckpointError(
            f"could not write the checkpoint of step {step} ({err}); the previous one is "
            f"intact. Free space (or fix the error) and continue with --resume."
        ) from err
    prune_checkpoints(ckpt_root, keep_last)


def _load_state(folder: Path, model, optimizer) -> int:
    verify_manifest(folder)
    saved = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != expected:
        raise CheckpointError(
            f"{folder}: its weights do not match this model (missing "
            f"{sorted(expected - set(saved))[:3]}, unexpected {sorted(set(saved) - expected)[:3]})"
        )
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    load_optimizer(optimizer, folder)
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
    payload = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    random.setstate(_tupled(payload["python_rng"]))
    np_state = payload["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    return int(payload["step"])


def save_generator(model: torch.nn.Module, tokenizer, folder: Path) -> Path:
    """Write a plain Hugging Face folder (LoRA merged) that ``from_pretrained`` loads."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    # A GGUF-loaded model carries a quantizer and refuses save_pretrained; its weights are
    # already dequantised float tensors, so both can go.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.eval()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return atomic_write_dir(folder, write)


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------
# Command line (TRL style: make_parser(subparsers) + a handler per subcommand)


def generate_main(args: argparse.Namespace) -> int:
    """``bayespref generate``: build (or complete) the candidate cache."""
    config = load_calibration_config(args.config, list(args.overrides))
    path = build_candidates(config)
    meta, _ = read_candidates(path)
    print(  # noqa: T201
        f"candidates: {meta['num_contexts']} contexts, {meta['num_unique']} unique of "
        f"{meta['num_generated']} generated -> {path}"
    )
    return 0


def calibrate_main(args: argparse.Namespace) -> int:
    """``bayespref calibrate``: candidates (cached), then the calibration run."""
    config = load_calibration_config(args.config, list(args.overrides))
    result = calibrate(config, resume=args.resume)
    if result.initial_eval_gold_nll is not None:
        print(f"held-out gold NLL before: {result.initial_eval_gold_nll:.4f}")  # noqa: T201
    if result.eval_gold_nll is not None:
        print(f"held-out gold NLL after:  {result.eval_gold_nll:.4f}")  # noqa: T201
    print(f"calibrated generator: {result.generator_dir}")  # noqa: T201
    return 0


def make_parser(subparsers) -> None:
    """Register ``generate`` and ``calibrate`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "generate", help="diverse beam search candidates, scored by a preference model -> JSONL"
    )
    p.add_argument("--config", help="YAML config (e.g. configs/calibrate-synthetic.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. decoding.num_beams=8")
    p.set_defaults(func=generate_main)

    p = subparsers.add_parser(
        "calibrate", help="calibrate a generator on ranked candidates -> runs/<name>/generator/"
    )
    p.add_argument("--config", help="YAML config (e.g. configs/calibrate-synthetic.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. loss.margin=0.01")
    p.set_defaults(func=calibrate_main)


def main(argv: list[str] | None = None) -> int:
    """``python -m bayespref.calibration generate|calibrate ...`` (same as the bayespref CLI)."""
    parser = argparse.ArgumentParser(prog="bayespref.calibration")
    make_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except (
        ConfigError,
        DataError,
        FileNotFoundError,
        RunExistsError,
        RunLockedError,
        NonFiniteError,
        CheckpointError,
    ) as err:
        print(f"{args.command}: error: {err}", file=sys.stderr)  # noqa: T201
        return 2
    except TrainingInterrupted as err:
        print(f"{args.command}: {err}", file=sys.stderr)  # noqa: T201
        return 130


if __name__ == "__main__":
    sys.exit(main())
