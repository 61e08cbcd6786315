"""Sampled candidates: ancestral (temperature, top-p, top-k) samples from the generator, one
context at a time, each context seeded by its own id (:func:`context_seed`) so that a resumed
or sharded run draws exactly what an uninterrupted one draws.

The one sampler of the project: calibration's candidate search (``source: samples | both``,
:mod:`.search`) and ``annotate-synthetic``'s sample cache both call :func:`sample_replies`.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch

from ..lm import Generator
from .config import SamplingConfig


def context_seed(seed: int, context_id: str) -> int:
    """The torch seed of one context's samples: ``crc32("<seed>:<context id>")``, independent
    of the order, batching and process that reach the context."""
    return zlib.crc32(f"{seed}:{context_id}".encode())


@torch.no_grad()
def sample_replies(
    generator: Generator,
    context: str | list[str],
    sampling: SamplingConfig,
    max_new_tokens: int,
    min_new_tokens: int,
    seed: int,
) -> tuple[list[str], list[float]]:
    """``sampling.num_samples`` sampled replies to one context (texts up to eos), in the order
    drawn, and each one's mean token log-probability under the generator, eos included:

        score(y) = sum_t log G(y_t | x, y_<t) / |y|

    from the unwarped logits (temperature, top-p and top-k shape the draw, not the score).
    ``seed`` seeds the draw inside a forked RNG: the caller's random stream is left as it was.
    """
    device = next(generator.model.parameters()).device
    prompt = torch.tensor([generator.prompt_ids(context)], device=device)  # (1, T_prompt)
    forked = [device.index or 0] if device.type == "cuda" else []
    model: Any = generator.model  # a transformers causal LM
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=True,
            num_beams=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            num_return_sequences=sampling.num_samples,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_token_id=generator.eos_token_id,
            pad_token_id=generator.pad_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[:, prompt.shape[1] :]  # (S, T_new)
    log_probs = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)  # (S, T, V)
    token_log_probs = log_probs.gather(-1, new[..., None])[..., 0]  # (S, T_new)
    is_eos = new == generator.eos_token_id
    first_eos = torch.where(is_eos.any(1), is_eos.int().argmax(1), new.shape[1] - 1)  # (S,)
    lengths = first_eos + 1  # tokens scored, eos included
    mask = torch.arange(new.shape[1], device=device)[None, :] < lengths[:, None]  # (S, T_new)
    scores = (token_log_probs * mask).sum(1) / lengths  # (S,)
    texts = [generator.decode_new(tokens)[0] for tokens in new.tolist()]
    return texts, scores.tolist()
