"""Frozen-encoder training: cached pooled features, head-only runs, exact reload."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from bayespref.config import ConfigError, load_config
from bayespref.data.splits import load_train_valid
from bayespref.evaluation import encode_split, predict_logits
from bayespref.features import FeatureCache, compute_features, encoder_fingerprint, item_key
from bayespref.model import PreferenceModel
from bayespref.train import train
from test_train import tiny_config


def test_freeze_encoder_refuses_peft():
    with pytest.raises(ConfigError, match="freeze_encoder"):
        load_config(None, ["model.freeze_encoder=true", "peft.method=lora"])


def test_features_path_gives_the_token_path_logits(tmp_path, tiny_encoder_dir):
    config = tiny_config(tmp_path, tiny_encoder_dir, "model.freeze_encoder=true")
    _, valid_set = load_train_valid(config.data, config.seed)
    model = PreferenceModel.build(config.model, valid_set.label_space)
    split = encode_split(model, valid_set, config.data.alpha)
    assert split.features is not None and split.features.shape == (len(split), 32)
    from_features = predict_logits(model, split, batch_size=7)
    split.features = None  # the same items through the encoder, batched differently
    from_tokens = predict_logits(model, split, batch_size=5)
    torch.testing.assert_close(from_features, from_tokens, atol=1e-5, rtol=1e-5)


def test_cache_hits_skip_the_encoder_and_stale_keys_cannot_hit(tmp_path, tiny_encoder_dir):
    config = tiny_config(tmp_path, tiny_encoder_dir, "model.freeze_encoder=true")
    _, valid_set = load_train_valid(config.data, config.seed)
    model = PreferenceModel.build(config.model, valid_set.label_space)
    split = encode_split(model, valid_set, config.data.alpha)  # no cache: in memory
    cache = tmp_path / "cache"
    first = compute_features(model, split.items, split.pad_token_id, cache_dir=cache)
    np.testing.assert_allclose(first, split.features, atol=1e-6)

    def broken(*args, **kwargs):
        raise AssertionError("the encoder ran although every item is cached")

    model.pooled_features = broken
    again = compute_features(model, split.items, split.pad_token_id, cache_dir=cache)
    np.testing.assert_array_equal(again, first)
    # one more token is another key; the cache holds exactly the items written
    changed = dict(split.items[0], input_ids=split.items[0]["input_ids"] + [5])
    assert item_key(changed) != item_key(split.items[0])
    stored = FeatureCache(cache, encoder_fingerprint(model)).get([item_key(changed)])
    assert stored == [None]


def test_fingerprint_changes_with_the_weights(tmp_path, tiny_encoder_dir):
    config = tiny_config(tmp_path, tiny_encoder_dir, "model.freeze_encoder=true")
    _, valid_set = load_train_valid(config.data, config.seed)
    model = PreferenceModel.build(config.model, valid_set.label_space)
    before = encoder_fingerprint(model)
    with torch.no_grad():
        next(model.encoder.parameters()).add_(1.0)
    assert encoder_fingerprint(model) != before


def test_frozen_run_trains_the_head_only_and_reloads_exactly(tmp_path, tiny_encoder_dir):
    config = tiny_config(
        tmp_path,
        tiny_encoder_dir,
        "model.freeze_encoder=true",
        f"model.feature_cache={tmp_path / 'cache'}",
        "optim.epochs=3",
    )
    initial = PreferenceModel.build(config.model, load_train_valid(config.data, 0)[0].label_space)
    result = train(config)
    assert result.steps == 3 * (96 // 8)
    saved = load_file(str(config.run_dir / "checkpoint" / "best" / "model.safetensors"))
    assert saved and all(k.startswith("head.") for k in saved)

    model = PreferenceModel.from_run(config.run_dir)
    for name, param in model.encoder.named_parameters():  # the encoder is the pretrained one
        torch.testing.assert_close(param, dict(initial.encoder.named_parameters())[name])
    assert not torch.equal(model.head[1].weight, initial.head[1].weight)  # the head learned
    # the reloaded run reproduces its best validation metrics from text
    _, valid_set = load_train_valid(config.data, config.seed)
    split = encode_split(model, valid_set, config.data.alpha)
    split.features = None
    q = torch.softmax(predict_logits(model, split, batch_size=16), -1).numpy()
    from bayespref.metrics import compute_metrics

    again = compute_metrics(q, split.empirical, split.labels, split.true_distribution)
    assert again["soft_ce"] == pytest.approx(result.best_metrics["soft_ce"], abs=1e-5)


def test_frozen_run_resumes_to_the_same_head(tmp_path, tiny_encoder_dir):
    import shutil

    config = tiny_config(
        tmp_path,
        tiny_encoder_dir,
        "model.freeze_encoder=true",
        "optim.epochs=2",
        "save_every=3",
        "keep_last=100",
    )
    train(config)
    ckpt = config.run_dir / "checkpoint"
    final = load_file(str(ckpt / "step-00000024" / "model" / "model.safetensors"))
    for folder in ckpt.glob("step-*"):  # as if the run had died right after step 9
        if int(folder.name.split("-")[1]) > 9:
            shutil.rmtree(folder)
    (config.run_dir / "summary.json").unlink()
    result = train(config, resume=True)
    assert result.steps == 24
    again = load_file(str(ckpt / "step-00000024" / "model" / "model.safetensors"))
    assert set(again) == set(final)
    for key in final:
        torch.testing.assert_close(again[key], final[key])
