"""Answer decoding: one answer per context from a generator (greedy, or the best hypothesis of
diverse beam search), the way generator evaluation compares a base and a calibrated generator.

The settings are the shared :class:`~bayespref.config.DecodingConfig` (the same section that
drives calibration's candidate search); answers use the defaults of :data:`ANSWER_DECODING`
(greedy, no minimum length) unless a config says otherwise. Prompts are the generator's own
(:meth:`bayespref.lm.Generator.prompt_ids`, chat template or plain, as the generator was
loaded), left-padded in batches; an answer ends at the generator's eos and is decoded without
it (:meth:`bayespref.lm.Generator.decode_new`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from transformers import GenerationConfig

from .beam_search import beam_config, diverse_beam_search
from .config import DecodingConfig
from .data.contexts import Context
from .lm import Generator, left_pad

logger = logging.getLogger(__name__)

ANSWER_DECODING: dict[str, Any] = {
    "method": "greedy",
    "num_beams": 10,
    "num_beam_groups": 10,
    "diversity_penalty": 4.0,
    "max_new_tokens": 40,
    "min_new_tokens": 0,
    "length_penalty": 1.0,
    "batch_size": 8,
    "seed": 0,
}
"""The answer-decoding defaults of generator evaluation: greedy, 0 to 40 new tokens, batches of
8, seed 0; with ``method: diverse-beam``, METHOD's K = 10, G = 10, delta = 4.0."""


def answer_decoding(**settings: Any) -> DecodingConfig:
    """A :class:`~bayespref.config.DecodingConfig` with the :data:`ANSWER_DECODING` defaults,
    ``settings`` replacing any of them (``answer_decoding(max_new_tokens=6)``)."""
    return DecodingConfig(**{**ANSWER_DECODING, **settings})


def greedy_sequences(
    generator: Generator,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    decoding: DecodingConfig,
) -> torch.Tensor:
    """``generate()`` without sampling or beams: (B, T + T_new) prompts followed by the answers
    (finished rows padded)."""
    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=decoding.max_new_tokens,
        min_new_tokens=decoding.min_new_tokens,
        eos_token_id=generator.eos_token_id,
        pad_token_id=generator.pad_token_id,
    )
    model: Any = generator.model  # a transformers causal LM: generate() is its own
    with torch.no_grad():
        return model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config
        )


def best_beam_sequences(
    generator: Generator,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    decoding: DecodingConfig,
) -> torch.Tensor:
    """The best hypothesis of diverse beam search per context: (B, T + T_new)."""
    config = beam_config(
        decoding, [generator.eos_token_id], generator.pad_token_id, num_return_sequences=1
    )
    return diverse_beam_search(generator.model, input_ids, attention_mask, config).sequences


def decode(
    generator: Generator, contexts: Sequence[Context], decoding: DecodingConfig
) -> tuple[list[str], list[int]]:
    """Each context's answer text (up to the first eos) and its length in tokens.

    ``torch.manual_seed(decoding.seed)`` is set first, so that two generators answer under the
    same seed; the model runs in eval mode and is put back in the mode it was in.
    """
    model = generator.model
    device = next(model.parameters()).device
    torch.manual_seed(decoding.seed)
    search = greedy_sequences if decoding.method == "greedy" else best_beam_sequences
    texts: list[str] = []
    lengths: list[int] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(contexts), decoding.batch_size):
            chunk = contexts[start : start + decoding.batch_size]
            input_ids, attention_mask = left_pad(
                [generator.prompt_ids(c) for c in chunk], generator.pad_token_id
            )  # (B, T) each
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            sequences = search(generator, input_ids, attention_mask, decoding)  # (B, T + T_new)
            for row in sequences[:, input_ids.shape[1] :].tolist():  # (B, T_new)
                text, length = generator.decode_new(row)
                texts.append(text)
                lengths.append(length)
            logger.debug("decoded %d/%d contexts", len(texts), len(contexts))
    finally:
        model.train(was_training)
    return texts, lengths
