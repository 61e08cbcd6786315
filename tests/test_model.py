"""PreferenceModel: inputs, pooling, masks, saving without pickle, peft options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bayespref.config import ModelConfig, PeftConfig
from bayespref.data.schema import LabelSpace
from bayespref.model import PreferenceModel, encode_pair

SPACE = LabelSpace(names=("bad", "ok", "good"), utilities=(-1.0, 0.0, 1.0))


def build(encoder_dir, peft: PeftConfig | None = None, **overrides) -> PreferenceModel:
    torch.manual_seed(0)
    config = ModelConfig(encoder=encoder_dir, dropout=0.0, **overrides)
    return PreferenceModel.build(config, SPACE, peft).eval()


def test_response_mask_covers_exactly_the_response_tokens(tiny_encoder_dir):
    model = build(tiny_encoder_dir)
    tok = model.tokenizer
    item = encode_pair(tok, ["how are you", "fine"], "that sounds hard", max_length=64)
    response_ids = tok("that sounds hard", add_special_tokens=False)["input_ids"]
    masked = [i for i, m in zip(item["input_ids"], item["response_mask"]) if m]
    assert masked == response_ids
    # the context is joined with [SEP] and comes first
    assert item["input_ids"][0] == tok.cls_token_id


def test_context_is_truncated_from_the_left_and_the_response_survives(tiny_encoder_dir):
    tok = build(tiny_encoder_dir).tokenizer
    context = ["word " * 200 + "LASTTURN"]
    item = encode_pair(tok, context, "my reply", max_length=32)
    assert len(item["input_ids"]) == 32
    text = tok.decode(item["input_ids"])
    assert "lastturn" in text  # the most recent context survives (cut from the left)
    assert sum(item["response_mask"]) == len(tok("my reply", add_special_tokens=False)["input_ids"])


def test_a_response_longer_than_max_length_drops_the_context(tiny_encoder_dir):
    tok = build(tiny_encoder_dir).tokenizer
    item = encode_pair(tok, ["some context"], "reply " * 100, max_length=16)
    assert len(item["input_ids"]) == 16
    assert sum(item["response_mask"]) == 14  # all but [CLS] and [SEP]


def test_empty_context_pools_over_the_whole_response(tiny_encoder_dir):
    tok = build(tiny_encoder_dir).tokenizer
    item = encode_pair(tok, [], "hello there", max_length=16)
    assert item["response_mask"] == [0, 1, 1, 0]


def test_padding_does_not_change_logits_attention_mask_polarity(tiny_encoder_dir):
    """Regression (METHOD section 7): the reference built the mask as input_ids == pad, so
    padding tokens were attended to and real tokens ignored. Here 1 marks real tokens: a
    padded batch must give the same logits as each example alone."""
    model = build(tiny_encoder_dir)
    contexts = [["a short one"], ["a much longer context with many more words in it"]]
    responses = ["yes", "I understand how you feel about that"]
    batch = model.encode(contexts, responses)
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1]  # padded
    pad_positions = batch["input_ids"] == model.tokenizer.pad_token_id
    assert torch.equal(batch["attention_mask"] == 0, pad_positions)
    with torch.no_grad():
        together = model(**batch)
        alone = torch.cat([model(**model.encode([c], [r])) for c, r in zip(contexts, responses)])
        inverted = dict(batch, attention_mask=(batch["input_ids"] == 0).long())
        wrong = model(**inverted)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(wrong, alone, atol=1e-3)


@pytest.mark.parametrize("pooling", ["response-mean", "mean", "cls"])
def test_forward_returns_logits_of_shape_batch_by_classes(tiny_encoder_dir, pooling):
    model = build(tiny_encoder_dir, pooling=pooling)
    batch = model.encode([[], ["ctx"]], ["a", "b c"])
    logits = model(**batch)
    assert logits.shape == (2, 3)
    assert logits.dtype == torch.float32


def test_save_and_load_round_trip_without_pickle(tiny_encoder_dir, tmp_path, monkeypatch):
    model = build(tiny_encoder_dir)
    with torch.no_grad():
        model.head[-1].bias.add_(torch.tensor([0.5, -0.2, 0.1]))
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    meta = json.loads((tmp_path / "m" / "preference_model.json").read_text())
    assert meta["label_space"]["names"] == ["bad", "ok", "good"]

    def no_unpickling(*args, **kwargs):
        raise AssertionError("loading must not unpickle")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr("pickle.load", no_unpickling)
    loaded = PreferenceModel.load(tmp_path / "m")
    batch = model.encode([["hi"]], ["hello you"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), model(**batch))
    q = loaded.predict_proba([["hi"]], ["hello you"])
    assert q.shape == (1, 3) and abs(q.sum() - 1) < 1e-6
    scores = loaded.score([["hi"]], ["hello you"])
    assert scores[0] == pytest.approx(q[0] @ [-1.0, 0.0, 1.0], abs=1e-6)
    worst = loaded.score([["hi"]], ["hello you"], rule="worst-class")
    assert worst[0] == pytest.approx(-q[0, 0], abs=1e-6)


def test_predict_proba_returns_input_order_whatever_the_batching(tiny_encoder_dir):
    model = build(tiny_encoder_dir)
    responses = ["ok", "a much longer reply with many more words in it", "mid length reply", "no"]
    contexts = [["hi"], ["tell me more about it please"], None, ["x"]]
    q_one_by_one = np.concatenate(
        [model.predict_proba([c], [r]) for c, r in zip(contexts, responses)]
    )
    q_batched = model.predict_proba(contexts, responses, batch_size=3)
    np.testing.assert_allclose(q_batched, q_one_by_one, atol=1e-6)
    with pytest.raises(ValueError, match="contexts for"):
        model.predict_proba(contexts, responses[:2])


@pytest.mark.parametrize("peft", ["lora", "prefix"])
def test_peft_trains_only_adapters_and_head_and_round_trips(tiny_encoder_dir, tmp_path, peft):
    model = build(tiny_encoder_dir, peft=PeftConfig(method=peft, num_virtual_tokens=4, r=2))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("head.") for n in trainable)
    encoder_trainable = [n for n in trainable if n.startswith("encoder.")]
    assert encoder_trainable, "the adapter has trainable parameters"
    marker = "lora_" if peft == "lora" else "prompt_encoder"
    assert all(marker in n for n in encoder_trainable)
    batch = model.encode([["hi"]], ["hello you"])
    logits = model(**batch)
    logits.sum().backward()
    model.save(tmp_path / peft)
    loaded = PreferenceModel.load(tmp_path / peft)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), model(**batch))


def test_a_run_directory_cannot_switch_on_remote_code(tiny_encoder_dir, tmp_path, monkeypatch):
    model = build(tiny_encoder_dir)
    model.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "preference_model.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["trust_remote_code"] = True  # a tampered, downloaded run
    meta_path.write_text(json.dumps(meta))
    seen = []
    import transformers

    real = transformers.AutoConfig.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", spy)
    loaded = PreferenceModel.load(tmp_path / "m")
    assert seen and not any(seen) and loaded.config.trust_remote_code is False
