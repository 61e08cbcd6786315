"""Candidates and prompts on top of diverse beam search (:mod:`bayespref.beam_search`).

:func:`generate_candidates` turns contexts into text candidates (search, cut at eos, decode);
:func:`encode_prompts` tokenises contexts into left-padded prompts with the project's one
prompt format (:mod:`bayespref.lm`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import torch

from .beam_search import DiverseBeamConfig, diverse_beam_search
from .lm import left_pad, prompt_ids

logger = logging.getLogger(__name__)


def generate_candidates(
    model: torch.nn.Module,
    tokenizer: Any,
    contexts: list[str],
    config: DiverseBeamConfig,
    *,
    chat_template: bool = True,
    batch_size: int = 8,
) -> list[list[str]]:
    """Diverse beam search candidates for each context, as text (new tokens only), best first.

    With `chat_template`, each context becomes one user turn of the tokenizer's chat template,
    followed by the assistant prompt. Prompts are left-padded and searched `batch_size` contexts
    at a time. eos and pad default to the tokenizer's when the config leaves them unset; set
    them explicitly when a chat turn ends with another token (SmolLM2: `<|im_end|>`). Each text
    stops before the first eos. Returns `len(contexts)` lists of `num_return_sequences` texts;
    duplicates are kept.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if config.eos_token_id is None and tokenizer.eos_token_id is not None:
        config = dataclasses.replace(config, eos_token_id=tokenizer.eos_token_id)
    if config.pad_token_id is None and tokenizer.pad_token_id is not None:
        config = dataclasses.replace(config, pad_token_id=tokenizer.pad_token_id)
    if not contexts:
        return []
    eos_set = set(config.eos_token_ids)
    pad_id = config.resolved_pad_token_id
    device = next(model.parameters()).device
    candidates: list[list[str]] = []
    for start in range(0, len(contexts), batch_size):
        chunk = contexts[start : start + batch_size]
        input_ids, attention_mask = encode_prompts(
            tokenizer, chunk, chat_template=chat_template, pad_token_id=pad_id
        )
        out = diverse_beam_search(model, input_ids.to(device), attention_mask.to(device), config)
        logger.debug("diverse beam search: %d/%d contexts", start + len(chunk), len(contexts))
        new = out.sequences[:, input_ids.shape[1] :].tolist()  # (B*R, T_new)
        R = config.resolved_num_return_sequences
        for b in range(len(chunk)):
            texts = []
            for tokens in new[b * R : (b + 1) * R]:
                end = next((i for i, t in enumerate(tokens) if t in eos_set), len(tokens))
                texts.append(tokenizer.decode(tokens[:end], skip_special_tokens=True))
            candidates.append(texts)
    return candidates


def encode_prompts(
    tokenizer: Any,
    contexts: Sequence[str | Sequence[str]],
    *,
    chat_template: bool = True,
    pad_token_id: int | None = None,
    max_context_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise contexts (strings or lists of turns) into left-padded (input_ids,
    attention_mask), each (B, T), with the project's one prompt format
    (:func:`bayespref.lm.prompt_ids`: the chat template's own text carries any special tokens).
    """
    ids = [prompt_ids(tokenizer, c, chat_template, max_context_tokens) for c in contexts]
    if pad_token_id is None:
        # any id works under a zero attention mask
        pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return left_pad(ids, pad_token_id)
