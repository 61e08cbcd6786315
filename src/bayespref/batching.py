"""Batching without bias: random batches, forwarded in length-grouped chunks.

The batch normaliser of the d-PM losses estimates the class marginal from the batch, so the
batch must be a random sample (METHOD section 3): sorting the data by length, the usual cure
for padding, would group similar items and bias it. Here the batch stays random and only its
*forward pass* is split: the batch's items are sorted by length and cut into chunks whose
padded size stays within ``max_padding_waste`` of their real tokens; the chunks' logits are put
back in batch order before the loss, which therefore sees exactly the same batch. In eval mode
(no dropout) the logits equal those of one padded forward pass, so the loss and its gradient
are unchanged; only padded tokens are saved.

Padding waste is ``padded tokens / real tokens`` (1.0 = no padding).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

TOKEN_INPUTS = ("input_ids", "attention_mask", "response_mask", "token_type_ids")


def padding_waste(lengths: Sequence[int] | np.ndarray) -> float:
    """``max(lengths) * len(lengths) / sum(lengths)`` of one right-padded batch."""
    length_array = np.asarray(lengths)  # (B,)
    if length_array.size == 0 or length_array.sum() == 0:
        return 1.0
    return float(length_array.max() * length_array.size / length_array.sum())


def length_chunks(
    lengths: Sequence[int] | np.ndarray, max_padding_waste: float | None
) -> list[np.ndarray]:
    """Positions of the batch grouped into forward chunks, longest items first.

    Greedy over the items sorted by length (descending): an item joins the current chunk
    unless that would push the chunk's padding waste above ``max_padding_waste``. Every chunk
    then stays within the limit (a chunk of one item has none), so the whole batch does too.
    ``None`` keeps the batch whole.
    """
    length_array = np.asarray(lengths)  # (B,)
    if max_padding_waste is None or length_array.size == 0:
        return [np.arange(length_array.size)]
    if max_padding_waste < 1.0:
        raise ValueError(f"max_padding_waste must be >= 1.0, got {max_padding_waste}")
    order = np.argsort(-length_array, kind="stable")
    chunks: list[list[int]] = []
    longest = real = 0
    for position in order:
        length = int(length_array[position])
        if chunks and longest * (len(chunks[-1]) + 1) <= max_padding_waste * (real + length):
            chunks[-1].append(int(position))
            real += length
        else:
            chunks.append([int(position)])
            longest, real = length, length
    return [np.asarray(c) for c in chunks]


def forward_in_chunks(
    model, batch: dict[str, Tensor], device, max_padding_waste: float | None
) -> Tensor:
    """Logits (B, C) of a right-padded token batch, computed chunk by chunk.

    Each chunk is trimmed to its own longest item; the result is in the batch's order. A
    batch of precomputed ``features`` goes through in one piece.
    """
    inputs = {k: v for k, v in batch.items() if k in (*TOKEN_INPUTS, "features")}
    if "features" in inputs or max_padding_waste is None:
        return model(**{k: v.to(device) for k, v in inputs.items()})
    lengths = inputs["attention_mask"].sum(1).cpu().numpy()
    chunks = length_chunks(lengths, max_padding_waste)
    if len(chunks) == 1:
        return model(**{k: v.to(device) for k, v in inputs.items()})
    pieces, positions = [], []
    for chunk in chunks:
        rows = torch.as_tensor(chunk)
        width = int(lengths[chunk].max())
        piece = {k: v[rows, :width].to(device) for k, v in inputs.items()}
        pieces.append(model(**piece))  # (b, C)
        positions.append(rows)
    logits = torch.cat(pieces)  # (B, C) in chunk order
    inverse = torch.empty(len(lengths), dtype=torch.long)
    inverse[torch.cat(positions)] = torch.arange(len(lengths))
    return logits[inverse.to(logits.device)]
