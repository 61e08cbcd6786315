"""Diverse beam search: equivalence with transformers 4.56.2, config validation, helpers.

The reference outputs in tests/fixtures/dbs/cases.json were recorded by
scripts/make_dbs_fixtures.py with transformers 4.56.2 (the last release that runs group beam
search in the library) on tiny seeded models stored beside them as safetensors; this test needs
only the current transformers.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch

from bayespref.beam_search import DiverseBeamConfig, beam_config, diverse_beam_search
from bayespref.config import DecodingConfig
from bayespref.generation import encode_prompts, generate_candidates

FIXTURES = Path(__file__).parent / "fixtures" / "dbs"
REFERENCE = json.loads((FIXTURES / "cases.json").read_text())
CASES = REFERENCE["cases"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@cache
def load_model(name: str):
    from transformers import AutoModelForCausalLM

    attn = REFERENCE["meta"]["attn_implementation"][name]
    model = AutoModelForCausalLM.from_pretrained(
        FIXTURES / name, use_safetensors=True, attn_implementation=attn
    )
    return model.eval()


def case_batch(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_matches_transformers_456_group_beam_search(case):
    model = load_model(case["model"])
    input_ids, attention_mask = case_batch(case)
    config = DiverseBeamConfig(**case["settings"])

    out = diverse_beam_search(model, input_ids, attention_mask, config)

    expected = torch.tensor(case["sequences"])
    assert out.sequences.shape == expected.shape
    assert torch.equal(out.sequences, expected), "tokens or beam order differ from 4.56.2"
    torch.testing.assert_close(
        out.sequence_scores,
        torch.tensor(case["sequence_scores"], dtype=torch.float32),
        rtol=1e-5,
        atol=1e-4,
    )


def test_fixtures_cover_the_settings():
    """The recorded cases exercise what the search branches on."""
    settings = [c["settings"] for c in CASES]
    assert {(s["num_beams"], s["num_beam_groups"]) for s in settings} >= {(4, 2), (6, 3), (4, 4)}
    assert {str(s["early_stopping"]) for s in settings} == {"True", "False", "never"}
    assert {s["length_penalty"] for s in settings} >= {1.0, 2.0, -0.5}
    assert any(s["min_new_tokens"] > 0 for s in settings)
    assert any(len(s["eos_token_id"]) > 1 for s in settings)
    assert any(s["num_return_sequences"] < s["num_beams"] for s in settings)
    assert any(s["pad_token_id"] == s["eos_token_id"][0] for s in settings)
    assert any(s["pad_token_id"] != s["eos_token_id"][0] for s in settings)
    # some beams finish early (eos, then padding) and prompts have different lengths in a batch
    assert any(
        c["settings"]["eos_token_id"][0] in row[len(c["input_ids"][0]) :]
        for c in CASES
        for row in c["sequences"]
    )
    assert any(0 in row for c in CASES for row in c["attention_mask"])


@pytest.mark.parametrize(
    "settings",
    [
        dict(length_penalty=1.0, early_stopping=False, min_new_tokens=0),
        dict(length_penalty=-0.5, early_stopping=True, min_new_tokens=3),
        dict(length_penalty=2.0, early_stopping="never", min_new_tokens=0),
    ],
)
@pytest.mark.parametrize("model_name", ["gpt2-tiny", "llama-tiny"])
def test_one_group_equals_ordinary_beam_search(model_name, settings):
    """With G = 1 there is no diversity term and the search is plain beam search, which
    current transformers still ships: its generate() must agree.

    pad_token_id is not 0 on purpose: generate()'s beam search fills finished rows with
    `pad_token_id or eos_token_id[0]`, so a pad id of 0 (falsy) is replaced by eos there,
    while 4.56's group beam search (and ours) pads with 0.
    """
    model = load_model(model_name)
    case = next(c for c in CASES if c["model"] == model_name and c["name"].endswith("/ragged"))
    input_ids, attention_mask = case_batch(case)
    eos = case["settings"]["eos_token_id"]
    common = dict(max_new_tokens=10, eos_token_id=eos, pad_token_id=3, **settings)
    config = DiverseBeamConfig(num_beams=4, num_beam_groups=1, diversity_penalty=0.0, **common)

    ours = diverse_beam_search(model, input_ids, attention_mask, config)
    with torch.no_grad():
        ref = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            num_beams=4,
            num_return_sequences=4,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            **common,
        )

    assert torch.equal(ours.sequences, ref.sequences)
    torch.testing.assert_close(ours.sequence_scores, ref.sequences_scores, rtol=1e-5, atol=1e-4)


def test_config_defaults_are_the_reference_setting():
    config = DiverseBeamConfig()
    assert (config.num_beams, config.num_beam_groups, config.diversity_penalty) == (10, 10, 4.0)
    assert (config.min_new_tokens, config.max_new_tokens) == (10, 40)
    assert config.num_return_sequences == config.num_beams
    assert config.eos_token_ids == [] and config.resolved_pad_token_id is None
    config = DiverseBeamConfig(eos_token_id=[7, 9])
    assert config.eos_token_ids == [7, 9] and config.resolved_pad_token_id == 7


def test_config_fields_have_help():
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(DiverseBeamConfig))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_beams=0), "num_beams must be a positive integer"),
        (dict(num_beams=6, num_beam_groups=4), "divisible by num_beam_groups"),
        (dict(num_beams=4, num_beam_groups=8), "divisible by num_beam_groups"),
        (dict(num_beam_groups=0), "num_beam_groups must be a positive integer"),
        (dict(diversity_penalty=-1.0), "diversity_penalty must be >= 0"),
        (dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.0), "must be > 0 when"),
        (dict(max_new_tokens=0), "max_new_tokens must be a positive integer"),
        (dict(min_new_tokens=50, max_new_tokens=40), "min_new_tokens must be an integer in"),
        (dict(min_new_tokens=-1), "min_new_tokens must be an integer in"),
        (dict(length_penalty=float("nan")), "length_penalty must be a finite number"),
        (dict(early_stopping="sometimes"), "early_stopping must be True, False or 'never'"),
        (dict(early_stopping=1), "early_stopping must be True, False or 'never'"),
        (dict(num_return_sequences=11), "num_return_sequences must be an integer in"),
        (dict(num_return_sequences=0), "num_return_sequences must be an integer in"),
        (dict(eos_token_id=[]), "eos_token_id must be None"),
        (dict(eos_token_id=-3), "eos_token_id must be None"),
        (dict(pad_token_id=-1), "pad_token_id must be None or a non-negative integer"),
    ],
)
def test_config_rejects_invalid_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiverseBeamConfig(**kwargs)


def test_beam_config_takes_the_beam_settings_of_a_decoding_section():
    decoding = DecodingConfig(
        num_beams=6, num_beam_groups=3, diversity_penalty=2.0, max_new_tokens=12,
        min_new_tokens=3, length_penalty=0.5, early_stopping=True,
    )  # fmt: skip
    config = beam_config(decoding, eos_token_id=[7, 9], pad_token_id=2)
    assert (config.num_beams, config.num_beam_groups, config.diversity_penalty) == (6, 3, 2.0)
    assert (config.min_new_tokens, config.max_new_tokens) == (3, 12)
    assert (config.length_penalty, config.early_stopping) == (0.5, True)
    assert config.eos_token_ids == [7, 9] and config.pad_token_id == 2
    assert config.num_return_sequences == 6
    assert beam_config(decoding, 7, None, num_return_sequences=1).num_return_sequences == 1
    with pytest.raises(ValueError, match="diverse-beam"):
        beam_config(DecodingConfig(method="greedy"), 7, 2)


def test_rejects_encoder_decoder_models():
    class Seq2Seq(torch.nn.Module):
        class config:  # noqa: N801 - mimics model.config
            is_encoder_decoder = True

    with pytest.raises(NotImplementedError, match="decoder-only"):
        diverse_beam_search(
            Seq2Seq(), torch.zeros((1, 2), dtype=torch.long), None, DiverseBeamConfig()
        )


def tiny_chat_tokenizer():
    """A word-level tokenizer over the 128 ids of the fixture models, with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, "user": 3, "assistant": 4}
    vocab.update({f"w{i}": i for i in range(5, 128)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.chat_template = (
        "{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
        "{% if add_generation_prompt %}<s> assistant {% endif %}"
    )
    return tokenizer


def test_encode_prompts_applies_chat_template_and_left_pads():
    tokenizer = tiny_chat_tokenizer()
    input_ids, attention_mask = encode_prompts(tokenizer, ["w7 w8 w9", "w10"])
    assert input_ids.tolist() == [
        [0, 3, 7, 8, 9, 1, 0, 4],
        [2, 2, 0, 3, 10, 1, 0, 4],
    ]
    assert attention_mask.tolist() == [[1] * 8, [0, 0, 1, 1, 1, 1, 1, 1]]
    plain_ids, _ = encode_prompts(tokenizer, ["w7 w8", "w10"], chat_template=False)
    assert plain_ids.tolist() == [[7, 8], [2, 10]]


def test_generate_candidates_decodes_new_tokens_per_context():
    model = load_model("gpt2-tiny")
    tokenizer = tiny_chat_tokenizer()
    eos = next(c for c in CASES if c["model"] == "gpt2-tiny")["settings"]["eos_token_id"]
    config = DiverseBeamConfig(
        num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=6,
        min_new_tokens=1, eos_token_id=eos,
    )  # fmt: skip
    contexts = ["w7 w8 w9", "w10", "w11 w12"]

    candidates = generate_candidates(model, tokenizer, contexts, config, batch_size=2)

    assert [len(c) for c in candidates] == [4, 4, 4]
    # the same thing by hand: search, cut each row at its first eos, decode the new tokens
    input_ids, attention_mask = encode_prompts(tokenizer, contexts, pad_token_id=2)
    new = diverse_beam_search(model, input_ids[:2], attention_mask[:2], config).sequences
    rows = new[:, input_ids.shape[1] :].tolist()
    expected = []
    for row in rows:
        row = row[: row.index(eos[0])] if eos[0] in row else row
        expected.append(tokenizer.decode(row, skip_special_tokens=True))
    assert candidates[0] + candidates[1] == expected
    assert all(text.startswith("w") or text == "" for c in candidates for text in c)


def test_outputs_are_differentiable_inputs_and_mode_is_restored():
    """Calibration feeds the candidates to a forward pass it differentiates: the outputs must
    not be inference-mode tensors, and a model in train mode must come back in train mode."""
    model = load_model("gpt2-tiny")  # GPT-2 has dropout (the Llama config has none)
    case = next(c for c in CASES if c["model"] == "gpt2-tiny")
    input_ids, attention_mask = case_batch(case)
    model.train()
    try:
        out = diverse_beam_search(
            model, input_ids, attention_mask, DiverseBeamConfig(**case["settings"])
        )
        assert model.training
        assert not out.sequences.is_inference() and not out.sequence_scores.is_inference()
        # dropout was off during the search: the result is the recorded one
        assert torch.equal(out.sequences, torch.tensor(case["sequences"]))
        model.zero_grad()
        model(input_ids=out.sequences).logits.logsumexp(-1).mean().backward()
        assert model.lm_head.weight.grad is not None
    finally:
        model.zero_grad()
        model.eval()


def test_encode_prompts_rejects_missing_template_and_empty_contexts():
    tokenizer = tiny_chat_tokenizer()
    with pytest.raises(ValueError, match="encode to no tokens"):
        encode_prompts(tokenizer, ["w7", ""], chat_template=False)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        encode_prompts(tokenizer, ["w7"])
