"""The contexts of a calibration run: rows ``{"id", "context", "gold"}`` from the configured
source (:mod:`bayespref.data.contexts`), and the seeded split into training and held-out
contexts that candidate search and training share."""

from __future__ import annotations

import numpy as np

from ..config import ConfigError
from ..data.contexts import convabuse_contexts, read_context_jsonl, subsample, synthetic_contexts
from .config import ContextsConfig


def load_contexts(data: ContextsConfig, require_gold: bool = True) -> list[dict]:
    """Rows ``{"id", "context", "gold"}`` from the configured source (see ContextsConfig);
    ``require_gold=False``: a JSONL row may leave ``gold`` out (None)."""
    if data.source == "synthetic":
        return synthetic_contexts(data.n or 200, seed=data.seed)
    assert data.path is not None  # ContextsConfig requires one for these sources
    if data.source == "jsonl":
        rows = read_context_jsonl(data.path, require_gold=require_gold)
    else:
        rows = convabuse_contexts(data.path)
    return subsample(rows, data.n, data.seed)


def split_contexts(rows: list[dict], data: ContextsConfig, seed: int) -> tuple[list, list]:
    """(train, eval): a seeded random hold-out of ``n_eval`` (or ``eval_fraction``) contexts."""
    n_eval = data.n_eval
    if n_eval is None:
        n_eval = int(round(data.eval_fraction * len(rows)))
    if n_eval >= len(rows):
        raise ConfigError(f"n_eval={n_eval} leaves no training contexts out of {len(rows)}")
    order = np.random.default_rng([seed, 0xCA1]).permutation(len(rows))
    held = set(order[:n_eval].tolist())
    train = [r for i, r in enumerate(rows) if i not in held]
    held_out = [r for i, r in enumerate(rows) if i in held]
    return train, held_out
