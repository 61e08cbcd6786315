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
    from bayespref.testing import save_tiny_encoder

    try:
        return str(save_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder")))
    except FileNotFoundError as err:
        pytest.skip(f"{err} (its tokenizer is used by tests)")


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
    from bayespref.testing import save_char_llama

    return str(save_char_llama(tmp_path_factory.mktemp("char-llama")))


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
