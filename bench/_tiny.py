"""Tiny random models for the benchmarks' `--tiny` modes: they check that a script's set-up,
imports and code paths run (in seconds, on a CPU, with no download), and measure nothing.
The models are the test suite's (:mod:`bayespref.testing`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from _util import REPO

sys.path.insert(0, str(REPO / "src"))

from bayespref.testing import save_tiny_encoder, save_tiny_llama  # noqa: E402


def tiny_encoder(folder: Path) -> str:
    """A random 2-layer, 32-wide BERT with the packaged MiniLM tokenizer, saved in ``folder``."""
    try:
        return str(save_tiny_encoder(folder))
    except FileNotFoundError as err:
        raise SystemExit(f"--tiny: {err}") from err


def tiny_generator(folder: Path) -> str:
    """A random 2-layer, 32-wide Llama with a byte-level ChatML tokenizer, saved in ``folder``."""
    return str(save_tiny_llama(folder))
