"""Length-grouped forward chunks inside random batches: same logits and gradients, less padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayespref.batching import forward_in_chunks, length_chunks, padding_waste
from bayespref.config import ModelConfig
from bayespref.data.schema import LabelSpace
from bayespref.model import PreferenceModel


def test_padding_waste_by_hand():
    assert padding_waste([4, 2, 2]) == pytest.approx(12 / 8)
    assert padding_waste([5]) == 1.0


def test_length_chunks_by_hand():
    # sorted 10, 9, 2, 2: 9 joins 10 (20 <= 1.1 * 19); a 2 would not (30 > 1.1 * 21)
    chunks = length_chunks([10, 2, 9, 2], max_padding_waste=1.1)
    assert [c.tolist() for c in chunks] == [[0, 2], [1, 3]]
    assert [c.tolist() for c in length_chunks([10, 2, 9, 2], None)] == [[0, 1, 2, 3]]
    with pytest.raises(ValueError):
        length_chunks([3], 0.9)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 200), min_size=1, max_size=64),
    st.floats(1.0, 2.0, allow_nan=False),
)
def test_every_chunk_stays_within_the_limit_and_the_chunks_cover_the_batch(lengths, limit):
    chunks = length_chunks(lengths, limit)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(lengths)))
    lengths = np.asarray(lengths)
    for chunk in chunks:
        assert padding_waste(lengths[chunk]) <= limit + 1e-9
    padded = sum(lengths[c].max() * len(c) for c in chunks)
    assert padded / lengths.sum() <= limit + 1e-9


def test_chunked_forward_gives_the_same_logits_and_gradients(tiny_encoder_dir):
    torch.manual_seed(0)
    config = ModelConfig(encoder=tiny_encoder_dir, max_length=64, dropout=0.0)
    model = PreferenceModel.build(config, LabelSpace(("bad", "ok", "good"), (0.0, 0.5, 1.0)))
    model.eval()  # no dropout: an item's logits cannot depend on its batch
    words = "a b c d e f g h i j k l m n o p".split()
    responses = [" ".join(words[: 1 + (7 * i) % 16]) for i in range(12)]
    batch = model.encode([["how are you"]] * 12, responses)
    lengths = batch["attention_mask"].sum(1).numpy()
    assert padding_waste(lengths) > 1.3  # there is padding to save
    assert len(length_chunks(lengths, 1.1)) > 1

    def logits_and_grads(max_waste):
        model.zero_grad()
        logits = forward_in_chunks(model, batch, "cpu", max_waste)
        (logits.log_softmax(-1)[:, 0] * torch.arange(12.0)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logits.detach(), grads

    whole, whole_grads = logits_and_grads(None)
    chunked, chunked_grads = logits_and_grads(1.1)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    assert whole_grads.keys() == chunked_grads.keys() and whole_grads
    for name in whole_grads:
        torch.testing.assert_close(chunked_grads[name], whole_grads[name], atol=1e-5, rtol=1e-4)
