"""What the ranking loss teaches: the generator's own ranking accuracy on held-out candidates.

The ranking loss (:func:`.losses.margin_ranking_loss`) asks the generator's sequence score
``P(y) = sum_t log G(y_t | x, y_<t) / |y|^a`` (``loss.scoring`` / ``loss.length_penalty``, the
rule the loss trains) to order a context's candidates as the preference model does. How far it
got is measured on contexts held out of training:

``rank_acc = sum_g sum_{i<j in g, r_i != r_j} c_ij / #those pairs``, with ``r`` the reference
score (``rank_acc_pm``: the preference model's score in the candidate file; ``rank_acc_oracle``:
the synthetic oracle's true expected utility) and ``c_ij = 1`` when ``(P_i - P_j)(r_i - r_j) >
0``, ``1/2`` when the generator ties (``P_i = P_j``), else 0. Pairs the reference ties are left
out; pooled over all pairs of all held-out contexts (BRIO's "share of candidate pairs the model
orders like the metric"; random 0.5). It is
:func:`bayespref.ranking_metrics.pairwise_accuracy` with the generator as the scorer.

Duplicate texts are kept once in the candidate file (with a count), so each pair of distinct
texts counts once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch

from ..data.synthetic import SyntheticOracle
from ..lm import Generator
from ..ranking_metrics import pairwise_accuracy
from .config import CalibrationLossConfig
from .forward import continuation_logprobs
from .losses import sequence_scores

ArrayLike = Any  # numpy array, list or torch tensor


def generator_ranking_accuracy(
    generator_scores: ArrayLike, reference_scores: ArrayLike, groups: Sequence[Hashable]
) -> float:
    """Share of within-context candidate pairs the generator orders like the reference.

    Args:
        generator_scores: (N,) the generator's ``P(y)`` of each candidate (higher = more likely).
        reference_scores: (N,) the reference's score of each candidate (the PM's score, the
            oracle's utility; higher = better).
        groups: (N,) the context of each candidate; pairs are formed within a context only.

    Returns:
        ``sum c_ij / #pairs`` over pairs with different reference scores (generator ties count
        1/2); nan when there is no such pair.
    """
    return pairwise_accuracy(generator_scores, reference_scores, groups)


def counted_pairs(reference_scores: ArrayLike, group_sizes: Sequence[int]) -> int:
    """The pairs :func:`generator_ranking_accuracy` counts: within-group pairs whose reference
    scores differ; ``reference_scores`` (N,) in groups of ``group_sizes`` consecutive entries."""
    r = np.asarray(reference_scores, dtype=np.float64)
    pairs, start = 0, 0
    for size in group_sizes:
        block = r[start : start + size]  # (K_g,)
        i, j = np.triu_indices(size, k=1)
        pairs += int((block[i] != block[j]).sum())
        start += size
    return pairs


@dataclasses.dataclass
class HeldOutRanking:
    """The held-out contexts' candidates as token ids, with the references to rank against.

    ``candidates[g]``: the token ids of context ``g``'s candidates (``N`` in all, flattened in
    :attr:`groups` order); ``references``: name -> (N,) reference scores (``pm``, ``oracle``).
    """

    prompts: list[list[int]]
    candidates: list[list[list[int]]]
    references: dict[str, np.ndarray]

    @property
    def groups(self) -> list[int]:
        """(N,) the context index of each candidate."""
        return [g for g, c in enumerate(self.candidates) for _ in c]

    @property
    def num_candidates(self) -> int:
        return sum(len(c) for c in self.candidates)

    def num_pairs(self, reference: str) -> int:
        """Within-context pairs whose ``reference`` scores differ (the ones that count)."""
        return counted_pairs(self.references[reference], [len(c) for c in self.candidates])

    def evaluate(
        self,
        model: torch.nn.Module,
        loss: CalibrationLossConfig,
        pad_token_id: int,
        forward: str = "shared-context",
    ) -> dict[str, float]:
        """``{"rank_acc_<reference>": accuracy}`` of the generator now; a reference with no
        pair that counts is left out. One teacher-forced forward per context (its candidates
        batched, as in training), in eval mode without gradients."""
        scores = generator_candidate_scores(
            model, self.prompts, self.candidates, loss, pad_token_id, forward
        )  # (N,)
        results = {}
        for name, reference in self.references.items():
            accuracy = generator_ranking_accuracy(scores, reference, self.groups)
            if not math.isnan(accuracy):
                results[f"rank_acc_{name}"] = accuracy
        return results


def held_out_ranking(
    generator: Generator, rows: list[dict], *, pm: bool, oracle: bool
) -> HeldOutRanking | None:
    """The candidate rows of held-out contexts (:func:`.candidates.read_candidates`) ready to
    evaluate: ``pm`` ranks against each candidate's ``score`` (the preference model that ranked
    the file), ``oracle`` against :class:`~bayespref.data.synthetic.SyntheticOracle`'s utility
    (synthetic contexts only). None when there is no row or no reference."""
    if not rows or not (pm or oracle):
        return None
    references = {}
    if pm:
        references["pm"] = np.array(
            [c["score"] for row in rows for c in row["candidates"]], dtype=np.float64
        )  # (N,)
    if oracle:
        references["oracle"] = SyntheticOracle().utilities(
            (row["context"], c["text"]) for row in rows for c in row["candidates"]
        )  # (N,)
    return ranking_sets(generator, rows, references)


def ranking_sets(
    generator: Generator, rows: list[dict], references: dict[str, np.ndarray]
) -> HeldOutRanking:
    """Candidate rows as ``generator``'s token ids (its prompt format; candidates end with its
    stop token, as in training), with ``references``: name -> (N,) scores in row order."""
    return HeldOutRanking(
        prompts=[generator.prompt_ids(row["context"]) for row in rows],
        candidates=[[generator.target_ids(c["text"]) for c in row["candidates"]] for row in rows],
        references=references,
    )


@torch.no_grad()
def generator_candidate_scores(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[Sequence[int]]],
    loss: CalibrationLossConfig,
    pad_token_id: int,
    forward: str = "shared-context",
) -> np.ndarray:
    """(N,) the generator's ``P(y)`` (``loss.scoring``, ``loss.length_penalty``) of every
    candidate, contexts in order; the model runs in eval mode (restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        scores = []
        for prompt, continuations in zip(prompts, candidates, strict=True):
            logprobs, mask = continuation_logprobs(
                model,
                prompt,
                continuations,
                shared_context=forward == "shared-context",
                pad_token_id=pad_token_id,
            )  # (K_g, T)
            score = sequence_scores(logprobs, mask, loss.scoring, loss.length_penalty)  # (K_g,)
            scores.append(score.double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(scores) if scores else np.zeros(0)


@dataclasses.dataclass
class CandidateRanking:
    """Candidate sets (rows of a candidate file) to measure any generator's own ranking on
    (``bayespref evaluate-generator``): ``references`` name -> (N,) scores in row order,
    ``length_penalty`` the ``a`` of ``P(y) = sum log p / |y|^a``."""

    rows: list[dict]
    references: dict[str, np.ndarray]
    length_penalty: float = 1.0

    def accuracy(self, generator: Generator) -> dict[str, float]:
        """``{"rank_acc_<reference>": ...}`` of ``generator`` (one forward per set)."""
        sets = ranking_sets(generator, self.rows, self.references)
        loss = CalibrationLossConfig(length_penalty=self.length_penalty)
        return sets.evaluate(generator.model, loss, generator.pad_token_id)

    def pairs(self) -> dict[str, int]:
        """Pairs per reference that count (different reference scores within a set)."""
        sizes = [len(row["candidates"]) for row in self.rows]
        return {name: counted_pairs(r, sizes) for name, r in self.references.items()}
