"""Diverse (group) beam search for Hugging Face causal LMs (METHOD.md section 5, step 1).

Vijayakumar et al. 2016, "Diverse Beam Search": the `K` beams are split into `G` groups of
`K / G`. At each step the groups are extended one after the other; group `g` runs ordinary beam
search on its own beams, after subtracting `delta * n(v)` from the log-probability of every token
`v`, where `n(v)` counts how often the groups `0 .. g-1` of the same context picked `v` at this step
(Hamming diversity). Finished hypotheses are scored `sum log p / |y| ** length_penalty` and the
best `num_return_sequences` over all groups are returned.

transformers >= 4.57 no longer runs this in the library, so it is reimplemented here on the model's
forward pass and KV cache. It follows transformers 4.56.2 (`GenerationMixin._group_beam_search`,
`BeamSearchScorer`, `BeamHypotheses`, `HammingDiversityLogitsProcessor`,
`MinNewTokensLengthLogitsProcessor`) step for step, so that it returns the same tokens, in the same
order, with the same scores; `tests/test_generation.py` checks that against outputs recorded with
4.56.2 (`scripts/make_dbs_fixtures.py`). Quirks kept on purpose, for that equivalence:

- the returned scores include the diversity penalties that were paid along the way;
- a hypothesis that ended with any eos id is returned followed by the *first* eos id;
- the length in the length penalty counts the new tokens, eos included (not the prompt).

One deliberate difference that cannot change the output: once a group of a context is done,
4.56.2 refills its rows with a copy of context 0's beam; here they keep their own history. Either
way those rows only receive padding (which, as in 4.56.2, still counts in the Hamming term of the
later groups) and their hypotheses are never read again.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch

from .config import DecodingConfig, check_beam_settings, field_help

logger = logging.getLogger(__name__)

EarlyStopping = bool | str  # True, False or "never"


@dataclasses.dataclass
class DiverseBeamConfig:
    """Settings of diverse beam search; names and meanings follow `transformers.GenerationConfig`.

    The search algorithm's own parameter record: the beam settings of a
    :class:`~bayespref.config.DecodingConfig` (see :func:`beam_config`) plus what a search call
    needs beyond them (eos and pad ids, how many hypotheses to return). The defaults are the
    reference setting of METHOD.md section 5 (K = 10, G = 10, delta = 4.0, 10 to 40 new tokens).
    """

    num_beams: int = field_help(10, "K: beams per context, split evenly across the groups.")
    num_beam_groups: int = field_help(
        10, "G: number of groups; must divide num_beams. G = K gives one beam per group."
    )
    diversity_penalty: float = field_help(
        4.0,
        "delta: subtracted from a token's log-probability once per earlier group (same "
        "context, same step) that picked it. Must be > 0 when G > 1; unused when G = 1.",
    )
    max_new_tokens: int = field_help(40, "Generate at most this many tokens after the prompt.")
    min_new_tokens: int = field_help(
        10, "eos is forbidden until this many new tokens have been generated."
    )
    length_penalty: float = field_help(
        1.0,
        "A finished hypothesis scores sum(log p) / n_new_tokens ** length_penalty; > 0 "
        "favours longer outputs, < 0 shorter ones.",
    )
    early_stopping: EarlyStopping = field_help(
        False,
        "When a group stops: True as soon as it has K/G finished hypotheses; False when "
        "no live beam is likely to beat them (a heuristic); 'never' when none can.",
    )
    num_return_sequences: int | None = field_help(
        None, "Hypotheses returned per context, best first (default: num_beams)."
    )
    eos_token_id: int | list[int] | None = field_help(
        None, "End-of-sequence id or ids; None lets every beam run to max_new_tokens."
    )
    pad_token_id: int | None = field_help(
        None, "Pads the shorter outputs (default: the first eos id, as generate() does)."
    )

    def __post_init__(self) -> None:
        def is_int(x: Any) -> bool:
            return isinstance(x, int) and not isinstance(x, bool)

        check_beam_settings(
            self.num_beams,
            self.num_beam_groups,
            self.diversity_penalty,
            self.max_new_tokens,
            self.min_new_tokens,
            self.length_penalty,
            self.early_stopping,
        )
        # what a search call adds to the shared beam settings
        if self.num_return_sequences is None:
            self.num_return_sequences = self.num_beams
        if not is_int(self.num_return_sequences) or not (
            1 <= self.num_return_sequences <= self.num_beams
        ):
            raise ValueError(
                f"num_return_sequences must be an integer in [1, num_beams={self.num_beams}], "
                f"got {self.num_return_sequences!r}"
            )
        eos = self.eos_token_ids
        if not all(is_int(t) and t >= 0 for t in eos) or (
            self.eos_token_id is not None and not eos
        ):
            raise ValueError(
                "eos_token_id must be None, a non-negative integer or a non-empty list of them, "
                f"got {self.eos_token_id!r}"
            )
        if self.pad_token_id is not None and (
            not is_int(self.pad_token_id) or self.pad_token_id < 0
        ):
            raise ValueError(
                f"pad_token_id must be None or a non-negative integer, got {self.pad_token_id!r}"
            )

    @property
    def eos_token_ids(self) -> list[int]:
        """The eos ids as a list (empty when there is none)."""
        if self.eos_token_id is None:
            return []
        if isinstance(self.eos_token_id, Sequence) and not isinstance(self.eos_token_id, str):
            return list(self.eos_token_id)
        return [self.eos_token_id]

    @property
    def resolved_num_return_sequences(self) -> int:
        """num_return_sequences, else num_beams (what ``__post_init__`` fills in)."""
        if self.num_return_sequences is None:
            return self.num_beams
        return self.num_return_sequences

    @property
    def resolved_pad_token_id(self) -> int | None:
        """pad_token_id, else the first eos id (what generate() falls back to)."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        eos = self.eos_token_ids
        return eos[0] if eos else None


def beam_config(
    decoding: DecodingConfig,
    eos_token_id: int | list[int] | None,
    pad_token_id: int | None,
    num_return_sequences: int | None = None,
) -> DiverseBeamConfig:
    """The search settings of a diverse-beam ``decoding`` section, with the generator's eos and
    pad ids; the one place a :class:`DiverseBeamConfig` is built from a config file.

    ``num_return_sequences``: hypotheses kept per context (default: every beam, as candidate
    search wants; answer decoding keeps 1).
    """
    if decoding.method != "diverse-beam":
        raise ValueError(f"beam_config needs decoding.method=diverse-beam, got {decoding.method!r}")
    return DiverseBeamConfig(
        num_beams=decoding.num_beams,
        num_beam_groups=decoding.num_beam_groups,
        diversity_penalty=decoding.diversity_penalty,
        max_new_tokens=decoding.max_new_tokens,
        min_new_tokens=decoding.min_new_tokens,
        length_penalty=decoding.length_penalty,
        early_stopping=decoding.early_stopping,
        num_return_sequences=num_return_sequences,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


@dataclasses.dataclass
class DiverseBeamOutput:
    """What `diverse_beam_search` returns, laid out like `generate()`'s output.

    sequences: (B * num_return_sequences, T) prompt (as given, left padding included) followed by the
        new tokens; hypotheses that ended early get one eos and then pad_token_id. Rows
        `b * num_return_sequences ...` belong to context b, best first.
    sequence_scores: (B * num_return_sequences,) float32, the length-penalised score of each row.
    """

    sequences: torch.Tensor  # (B * num_return_sequences, T) long
    sequence_scores: torch.Tensor  # (B * num_return_sequences,) float32


class _FinishedHypotheses:
    """The best `size` finished hypotheses of one group of one context.

    Same bookkeeping as transformers 4.56 `BeamHypotheses`, insertion order and tie-breaking
    included: the final ranking sorts these lists stably, so equal scores (identical
    hypotheses in different groups, say) come out in the same order.
    """

    def __init__(
        self, size: int, length_penalty: float, early_stopping: EarlyStopping, max_new: int
    ):
        self.size = size
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.max_new = max_new
        self.beams: list[tuple[float, torch.Tensor]] = []  # (score, token ids)
        self.worst_score = 1e9

    def add(self, tokens: torch.Tensor, sum_logprobs: float, n_new: int) -> None:
        score = sum_logprobs / (n_new**self.length_penalty)
        if len(self.beams) < self.size or score > self.worst_score:
            self.beams.append((score, tokens))
            if len(self.beams) > self.size:
                # drop the worst; on a tie, the one added first
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs: float, n_new: int) -> bool:
        """Can no live beam of this group beat the finished hypotheses any more?

        `best_sum_logprobs`: the best candidate score of the group at this step; `n_new`: the
        number of new tokens once this step's token is appended.
        """
        if len(self.beams) < self.size:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            # log-probs only fall, but a longer output divides by more: bound at max length
            best_attainable = best_sum_logprobs / self.max_new**self.length_penalty
        else:
            best_attainable = best_sum_logprobs / n_new**self.length_penalty
        return self.worst_score >= best_attainable


def forward_kwargs(model: torch.nn.Module) -> tuple[str, dict[str, Any], bool]:
    """How to call ``model``'s forward with a KV cache: the cache argument's name, fixed extra
    arguments, and whether to pass position_ids (the search and calibration's
    shared-context forward both use it).

    transformers 5 renamed `past_key_values` to `cache`; `logits_to_keep=1` computes the LM head
    on the last position only, which is all we read (generate() does the same).
    """
    params = inspect.signature(model.forward).parameters
    cache_name = "cache" if "cache" in params else "past_key_values"
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    return cache_name, extra, "position_ids" in params


def returned_cache(outputs: Any, cache_name: str) -> Any:
    """The KV cache a forward returned (under ``cache_name``, else ``past_key_values``);
    ``RuntimeError`` when the model returned none."""
    cache = getattr(outputs, cache_name, None)
    if cache is None:
        cache = getattr(outputs, "past_key_values", None)
    if cache is None:
        raise RuntimeError("the model returned no KV cache; diverse_beam_search needs one")
    return cache


def _reorder_cache(cache: Any, rows: torch.Tensor) -> Any:
    """Make cache row i a copy of old row rows[i] (beam i now continues beam rows[i])."""
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(rows)  # a transformers `Cache` (4.56 and 5.x): in place
        return cache
    # legacy tuple-of-tuples cache of older models
    return tuple(tuple(t.index_select(0, rows.to(t.device)) for t in layer) for layer in cache)


def diverse_beam_search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: DiverseBeamConfig,
) -> DiverseBeamOutput:
    """Diverse beam search from left-padded prompts with a decoder-only Hugging Face LM.

    Args:
        model: a causal LM (`AutoModelForCausalLM`), on the device of `input_ids`. It runs in
            eval mode (dropout would make the search random) and is put back in the mode it
            was in.
        input_ids: (B, T) prompts, left-padded.
        attention_mask: (B, T) 1 for prompt tokens, 0 for padding (None: no padding).
        config: search settings.

    Returns:
        `DiverseBeamOutput` with `num_return_sequences` rows per context, best first, equal to
        transformers 4.56's `generate(num_beams=K, num_beam_groups=G, ...)` with the same
        settings. The tensors are ordinary (not inference-mode) tensors, so they can be fed to
        a forward pass that is differentiated (calibration scores the candidates that way).
    """
    if getattr(model.config, "is_encoder_decoder", False):
        raise NotImplementedError("diverse_beam_search supports decoder-only models only")
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask {tuple(attention_mask.shape)} and input_ids "
            f"{tuple(input_ids.shape)} must have the same shape"
        )
    was_training = model.training
    model.eval()
    try:
        # no_grad rather than inference_mode: see "Returns" above
        with torch.no_grad():
            return _search(model, input_ids, attention_mask.to(input_ids.device), config)
    finally:
        model.train(was_training)


def _search(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    config: DiverseBeamConfig,
) -> DiverseBeamOutput:
    device = input_ids.device
    B, T0 = input_ids.shape
    K, G = config.num_beams, config.num_beam_groups
    S = K // G  # beams per group
    R = config.resolved_num_return_sequences
    eos_ids = config.eos_token_ids
    eos_set = set(eos_ids)
    pad_id = config.resolved_pad_token_id
    # Without eos nothing finishes, so rows are never padded: any id will do as the filler.
    filler = pad_id if pad_id is not None else 0
    delta = float(config.diversity_penalty)
    # Enough candidates that each group keeps S non-eos continuations even if every eos id
    # ranks on top of every beam.
    n_candidates = max(2, 1 + len(eos_ids)) * S
    cache_name, extra_kwargs, takes_position_ids = forward_kwargs(model)

    # Row b * K + k holds beam k of context b; beams g * S .. g * S + S - 1 form group g.
    seqs = input_ids.repeat_interleave(K, dim=0)  # (B*K, T)
    mask = attention_mask.long().repeat_interleave(K, dim=0)  # (B*K, T)
    # Only the first beam of each group starts live: -1e9 keeps its copies from picking the
    # same tokens at the first step.
    beam_scores = torch.full((B, K), -1e9, dtype=torch.float32, device=device)
    beam_scores[:, ::S] = 0
    beam_scores = beam_scores.view(-1)  # (B*K,) running sums of (penalised) log-probs
    offsets = torch.arange(B, device=device)[:, None] * K + torch.arange(S, device=device)
    group_rows = [(offsets + g * S).view(-1) for g in range(G)]  # each (B*S,), context-major
    finished = [
        [
            _FinishedHypotheses(
                S, config.length_penalty, config.early_stopping, config.max_new_tokens
            )
            for _ in range(G)
        ]
        for _ in range(B)
    ]
    done = [[False] * G for _ in range(B)]  # done[b][g]: group g of context b stopped
    eos_tensor = torch.tensor(eos_ids, dtype=torch.long, device=device)

    cache = None
    step_ids = seqs  # the whole prompt first, then one token per step
    while True:
        kwargs = {cache_name: cache, **extra_kwargs}
        if takes_position_ids:
            # positions count real tokens only, so left padding does not shift them
            position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            kwargs["position_ids"] = position_ids[:, -step_ids.shape[1] :]
        outputs = model(input_ids=step_ids, attention_mask=mask, use_cache=True, **kwargs)
        cache = returned_cache(outputs, cache_name)
        log_probs = torch.log_softmax(outputs.logits[:, -1, :].float(), dim=-1)  # (B*K, V)
        del outputs  # the prefill logits can be large
        V = log_probs.shape[-1]
        n_new = seqs.shape[1] + 1 - T0  # new tokens once this step's token is appended

        next_tokens = torch.zeros(B * K, dtype=seqs.dtype, device=device)  # (B*K,)
        parents = torch.arange(B * K, device=device)  # (B*K,) the row each beam continues
        for g in range(G):
            rows = group_rows[g]  # (B*S,)
            scores = log_probs[rows]  # (B*S, V)
            if g > 0 and delta > 0:
                # Hamming diversity: how often the earlier groups of the same context picked
                # each token at this step
                earlier = next_tokens.view(B, K)[:, : g * S]  # (B, g*S)
                counts = torch.zeros((B, V), dtype=torch.long, device=device)
                counts.scatter_add_(1, earlier, torch.ones_like(earlier))  # (B, V)
                scores = scores - (delta * counts).repeat_interleave(S, dim=0)
            if eos_ids and n_new - 1 < config.min_new_tokens:
                scores = scores.index_fill(1, eos_tensor, -math.inf)
            scores = scores + beam_scores[rows].unsqueeze(-1)  # (B*S, V)
            # the best continuations of the group's beams, per context
            top_scores, top_ids = torch.topk(
                scores.view(B, S * V), n_candidates, dim=1, largest=True, sorted=True
            )  # (B, n_candidates)
            top_scores_l, top_ids_l = top_scores.tolist(), top_ids.tolist()

            rows_l = rows.tolist()
            g_scores: list[float] = []
            g_tokens: list[int] = []
            g_parents: list[int] = []
            for b in range(B):
                own = rows_l[b * S : (b + 1) * S]
                if done[b][g]:
                    # nothing left to find: the rows idle on padding with score 0
                    g_scores += [0.0] * S
                    g_tokens += [filler] * S
                    g_parents += own
                    continue
                kept = 0
                for rank, (score, flat) in enumerate(zip(top_scores_l[b], top_ids_l[b])):
                    beam, token = divmod(flat, V)
                    if token in eos_set:
                        # an eos ranked below the top S would not have survived as a beam
                        if rank < S:
                            finished[b][g].add(seqs[own[beam]].clone(), score, n_new)
                        continue
                    g_scores.append(score)
                    g_tokens.append(token)
                    g_parents.append(own[beam])
                    kept += 1
                    if kept == S:
                        break
                if kept < S:  # cannot happen with n_candidates as above
                    raise RuntimeError(f"only {kept} of {S} beams could be continued")
                done[b][g] = finished[b][g].is_done(top_scores_l[b][0], n_new)
            beam_scores[rows] = torch.tensor(g_scores, dtype=torch.float32, device=device)
            next_tokens[rows] = torch.tensor(g_tokens, dtype=seqs.dtype, device=device)
            parents[rows] = torch.tensor(g_parents, dtype=torch.long, device=device)

        seqs = torch.cat([seqs[parents], next_tokens[:, None]], dim=-1)  # (B*K, T+1)
        mask = torch.cat([mask, mask.new_ones((B * K, 1))], dim=-1)
        cache = _reorder_cache(cache, parents)
        step_ids = seqs[:, -1:]  # (B*K, 1)
        if n_new >= config.max_new_tokens or all(all(d) for d in done):
            break

    # Groups still running contribute their live beams, unfinished.
    n_new = seqs.shape[1] - T0
    for b in range(B):
        for g in range(G):
            if not done[b][g]:
                for row in group_rows[g][b * S : (b + 1) * S].tolist():
                    finished[b][g].add(seqs[row].clone(), beam_scores[row].item(), n_new)

    # The best R over all groups of each context. `sorted` is stable and `pop` takes from the
    # end, so among equal scores the later one wins, as in 4.56.
    best: list[torch.Tensor] = []
    best_scores: list[float] = []
    for b in range(B):
        ranked = sorted((h for g in range(G) for h in finished[b][g].beams), key=lambda h: h[0])
        for _ in range(R):
            score, tokens = ranked.pop()
            best.append(tokens)
            best_scores.append(score)
    lengths = [len(t) for t in best]
    # room for one eos after the longest hypothesis, within the length limit
    width = min(max(lengths) + 1, T0 + config.max_new_tokens)
    sequences = seqs.new_full((B * R, width), filler)  # (B*R, width)
    for i, tokens in enumerate(best):
        sequences[i, : lengths[i]] = tokens
        if lengths[i] < width:
            # it finished: 4.56 writes the first eos id, whichever one ended it
            sequences[i, lengths[i]] = eos_ids[0]
    return DiverseBeamOutput(
        sequences=sequences,
        sequence_scores=torch.tensor(best_scores, dtype=torch.float32, device=device),
    )
