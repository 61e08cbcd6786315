"""Synthetic pairs with known truth: two replies to one context, judged by noisy annotators.

The truth is Rao-Kupper on the oracle's expected utilities ``u`` (METHOD section 9):
``P*(A) = sigmoid((u_A - u_B) / SCALE - THETA)``, ``P*(B) = sigmoid((u_B - u_A) / SCALE -
THETA)``, ``P*(tie) = 1 - P*(A) - P*(B)``. The annotators are the synthetic pool, each voting
from ``r P* + (1 - r) b`` with a pairwise bias ``b`` by kind: experts, average annotators and
spammers uniform, fence-sitters toward ties, lenient ones toward the first response shown (A)
and harsh ones toward the second (B), the position biases real pairwise data shows.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np

from ..pairwise import PairwiseDataset, PairwiseExample
from .annotators import default_annotator_pool, simulate_annotations
from .oracle import SyntheticOracle
from .texts import sample_context_with_replies

SCALE = 0.25  # utilities are in [-1, 1]: a 0.25 gap is one logit
THETA = 0.4  # Rao-Kupper tie parameter of the truth
PAIR_BIAS = {
    "expert": (1 / 3, 1 / 3, 1 / 3),
    "average": (1 / 3, 1 / 3, 1 / 3),
    "spammer": (1 / 3, 1 / 3, 1 / 3),
    "fence-sitter": (0.1, 0.1, 0.8),
    "lenient": (0.65, 0.25, 0.1),
    "harsh": (0.25, 0.65, 0.1),
}
STYLES = ("supportive", "pushy", "neutral", "advice", "dismissive", "short", "rambling")


def rao_kupper(u_a: np.ndarray, u_b: np.ndarray, theta: float = THETA) -> np.ndarray:
    """(N, 3) outcome distributions P*(A), P*(B), P*(tie) from utilities (N,) each."""
    gap = (np.asarray(u_a) - np.asarray(u_b)) / SCALE
    p_a = 1 / (1 + np.exp(-(gap - theta)))
    p_b = 1 / (1 + np.exp(-(-gap - theta)))
    return np.stack([p_a, p_b, 1 - p_a - p_b], axis=1)


def make_synthetic_pairs(
    n: int, seed: int = 0, min_annotators: int = 1, max_annotators: int = 5
) -> PairwiseDataset:
    """``n`` pairs (two styles of reply to one context) with ``true_distribution = P*`` and
    simulated votes; deterministic given ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = [dataclasses.replace(a, bias=PAIR_BIAS[a.kind]) for a in default_annotator_pool()]
    if not 1 <= min_annotators <= max_annotators <= len(pool):
        raise ValueError(
            f"need 1 <= min_annotators <= max_annotators <= {len(pool)}, "
            f"got {min_annotators}, {max_annotators}"
        )
    text_rng = random.Random(f"bayespref-synthetic-pairs-{seed}")
    items = []
    for _ in range(n):
        style_a, style_b = text_rng.sample(STYLES, 2)
        state = text_rng.getstate()
        _, context, (reply_a,) = sample_context_with_replies(text_rng, 1, style_a)
        text_rng.setstate(state)  # the same context (drawn first), another style of reply
        _, _, (reply_b,) = sample_context_with_replies(text_rng, 1, style_b)
        items.append((context, reply_a, reply_b))
    oracle = SyntheticOracle()
    u_a = oracle.utilities((c, a) for c, a, _ in items)
    u_b = oracle.utilities((c, b) for c, _, b in items)
    truth = rao_kupper(u_a, u_b) if n else np.zeros((0, 3))
    rng = np.random.default_rng([seed, 0x9A1])
    num_annotators, who, votes = simulate_annotations(
        truth, pool, min_annotators, max_annotators, rng
    )
    bounds = np.concatenate([[0], np.cumsum(num_annotators)])
    examples = []
    for i, (context, reply_a, reply_b) in enumerate(items):
        lo, hi = bounds[i], bounds[i + 1]
        examples.append(
            PairwiseExample(
                id=f"pair{seed}-{i:06d}",
                context=[context],
                response_a=reply_a,
                response_b=reply_b,
                counts=np.bincount(votes[lo:hi], minlength=3).astype(np.int64),
                annotations=[(pool[a].id, int(v)) for a, v in zip(who[lo:hi], votes[lo:hi])],
                true_distribution=truth[i],
            )
        )
    return PairwiseDataset(examples, f"synthetic-pairs-{seed}")
