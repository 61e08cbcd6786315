"""Pooled micro-batches (optim.pool_micro_batches): the grad_accum micro-batches of a step are
forwarded together in length-sorted chunks, each micro-batch's loss computed from its own rows
of the pooled logits. Same per-example losses, gradients and updates as one at a time."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from bayespref.config import load_config
from bayespref.data.splits import load_train_valid
from bayespref.evaluation import encode_split
from bayespref.losses import MarginalEMA
from bayespref.model import PreferenceModel
from bayespref.train import PreferenceTask, train
from bayespref.trainer_utils import micro_batch_indices

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def tiny_config(tmp_path, encoder: str, *overrides: str):
    return load_config(
        None,
        [
            f"output_dir={tmp_path}",
            f"model.encoder={encoder}",
            "model.max_length=48",
            "model.dropout=0.0",
            "data.train={n: 96, seed: 1}",
            "data.valid={n: 16, seed: 2}",
            "optim.batch_size=8",
            "optim.grad_accum=3",
            "progress=false",
            *overrides,
        ],
    )


def one_step(config, model, pooled: bool):
    """Per-example losses (in call order) and gradients of one step's forward_backward."""
    config = copy.deepcopy(config)
    config.optim.pool_micro_batches = pooled
    train_set, valid_set = load_train_valid(config.data, config.seed)
    split = encode_split(model, train_set, config.data.alpha)
    ema = MarginalEMA(3) if config.loss.normaliser == "ema" else None
    task = PreferenceTask(config, split, encode_split(model, valid_set, 0.1), ema, Accelerator())
    recorded = []
    objective = task.train_objective

    def recording(logits, prior, labels):
        losses = objective(logits, prior, labels)
        recorded.append(losses.detach().clone())
        return losses

    task.train_objective = recording
    micro_batches = [
        micro_batch_indices(m, len(split), config.optim.batch_size, 1, 0, config.seed)
        for m in range(config.optim.grad_accum)
    ]
    model.zero_grad(set_to_none=True)
    logged = task.forward_backward(model, micro_batches, lambda loss: loss.backward())
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return torch.cat(recorded), grads, logged["loss"], ema


@pytest.mark.parametrize("normaliser", ["batch", "ema"])
@pytest.mark.parametrize("detach", [False, True])
def test_pooled_step_equals_micro_batches_one_at_a_time(
    tmp_path, tiny_encoder_dir, normaliser, detach
):
    config = tiny_config(
        tmp_path, tiny_encoder_dir, f"loss.normaliser={normaliser}", f"loss.detach_target={detach}"
    )
    torch.manual_seed(0)
    model = PreferenceModel.build(config.model, load_train_valid(config.data, 0)[0].label_space)
    model.eval()  # no dropout: pooling draws dropout masks in another order (same law)
    losses_one, grads_one, loss_one, ema_one = one_step(config, model, pooled=False)
    losses_pooled, grads_pooled, loss_pooled, ema_pooled = one_step(config, model, pooled=True)
    assert losses_one.shape == (24,)  # 3 micro-batches of 8, each its own normaliser
    torch.testing.assert_close(losses_pooled, losses_one, rtol=1e-5, atol=1e-6)
    assert grads_pooled.keys() == grads_one.keys() and len(grads_one) > 10
    for name in grads_one:
        torch.testing.assert_close(grads_pooled[name], grads_one[name], rtol=1e-5, atol=1e-6)
    assert loss_pooled == pytest.approx(loss_one, rel=1e-5)
    if normaliser == "ema":  # updated once per micro-batch, in the same order
        torch.testing.assert_close(ema_pooled.state_dict()["m"], ema_one.state_dict()["m"])


def test_pooled_training_ends_with_the_unpooled_weights(tmp_path, tiny_encoder_dir):
    """Without dropout (pooling draws dropout masks in another order: the same law, other
    draws), a pooled run and an unpooled run end with the same weights."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    encoder = tmp_path / "encoder-without-dropout"
    encoder_config = AutoConfig.from_pretrained(tiny_encoder_dir)
    encoder_config.hidden_dropout_prob = encoder_config.attention_probs_dropout_prob = 0.0
    AutoModel.from_pretrained(tiny_encoder_dir, config=encoder_config).save_pretrained(encoder)
    AutoTokenizer.from_pretrained(tiny_encoder_dir).save_pretrained(encoder)
    finals = {}
    for pooled in (False, True):
        config = tiny_config(
            tmp_path,
            str(encoder),
            f"name=pooled-{pooled}",
            f"optim.pool_micro_batches={pooled}",
            "optim.max_steps=4",
            "eval_every=4",
        )
        train(config)
        path = config.run_dir / "checkpoint" / "step-00000004" / "model" / "model.safetensors"
        finals[pooled] = load_file(str(path))
    for name, value in finals[False].items():
        torch.testing.assert_close(finals[True][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_a_pool_is_cut_into_fewer_larger_chunks_than_its_micro_batches():
    """Why pooling is faster: 3 random micro-batches of 8 cut alone give many small chunks;
    pooled, the same 24 lengths give fewer, larger ones within the same padding limit."""
    from bayespref.batching import length_chunks, padding_waste

    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 120, size=24)
    alone = [length_chunks(lengths[i : i + 8], 1.1) for i in (0, 8, 16)]
    pooled = length_chunks(lengths, 1.1)
    assert len(pooled) < sum(len(c) for c in alone)
    assert np.mean([len(c) for c in pooled]) > np.mean([len(c) for a in alone for c in a])
    assert all(padding_waste(lengths[c]) <= 1.1 for c in pooled)
