"""Calibrate a generator with a preference model (METHOD.md section 5; BRIO-style).

Two halves, each a CLI subcommand (``bayespref generate`` and ``bayespref calibrate``):

1. :func:`build_candidates` (:mod:`.search`): for every training context, ``K`` candidates
   from diverse beam search (:mod:`bayespref.beam_search`), sampling (:mod:`.sampling`) or
   both (``source``: its beams, then its samples), scored by a trained preference
   model, sorted best to worst, identical texts kept once with a ``count``, written to the
   candidate file (:mod:`.candidates`; a cache: reused, resumed, or refused when the settings
   differ).
2. :func:`calibrate` (:mod:`.recipe`): fine-tune the generator (fully or with LoRA) on
   ``L = w_mle * NLL(gold) + w_rank * L_rank (+ w_gold * L_gold)`` (:mod:`.losses`, through
   the teacher-forced forward of :mod:`.forward`) and write ``<run>/generator/``, loadable by
   ``AutoModelForCausalLM.from_pretrained``. With ``eval_ranking`` the held-out contexts get
   candidates too (searched once, cached beside the training ones), and every evaluation logs
   the generator's own ranking accuracy on them (:mod:`.ranking`): what the ranking loss taught.

The modules, bottom to top: :mod:`.config` (what a run is configured with), :mod:`.losses`
(pure functions), :mod:`.forward` (log-probabilities of continuations, one context's loss),
:mod:`.contexts` (the training and held-out contexts), :mod:`.candidates` (the file format),
:mod:`.sampling` (the seeded sampler), :mod:`.search` (candidate search and rescoring), :mod:`.ranking` (the generator's ranking
accuracy on held-out candidates), :mod:`.recipe` (the training run). Loading
the generator, the prompt format and the gold NLL live in :mod:`bayespref.lm`.
"""

from .candidates import (
    CANDIDATES_FORMAT,
    CandidateCacheError,
    candidate_row_problem,
    candidates_meta_path,
    dedupe_and_rank,
    held_out_candidates_path,
    read_candidates,
)
from .config import (
    SCORINGS,
    CalibrationConfig,
    CalibrationLossConfig,
    ContextsConfig,
    SamplingConfig,
    ScorerConfig,
)
from .contexts import load_contexts, split_contexts
from .forward import (
    EncodedExample,
    continuation_logprobs,
    encode_example,
    example_loss,
    pooled_gold_nll,
    term_gradients,
)
from .losses import (
    calibration_loss,
    gold_margin_loss,
    margin_ranking_loss,
    sequence_scores,
    token_nll,
)
from .ranking import (
    CandidateRanking,
    HeldOutRanking,
    generator_ranking_accuracy,
    held_out_ranking,
    ranking_sets,
)
from .recipe import CalibrationResult, calibrate, save_generator
from .sampling import context_seed, sample_replies
from .search import build_candidates, rescore_candidates, write_held_out_candidates

__all__ = [
    "CANDIDATES_FORMAT",
    "SCORINGS",
    "CalibrationConfig",
    "CalibrationLossConfig",
    "CalibrationResult",
    "CandidateCacheError",
    "CandidateRanking",
    "ContextsConfig",
    "EncodedExample",
    "HeldOutRanking",
    "SamplingConfig",
    "ScorerConfig",
    "build_candidates",
    "calibrate",
    "calibration_loss",
    "candidate_row_problem",
    "candidates_meta_path",
    "context_seed",
    "continuation_logprobs",
    "dedupe_and_rank",
    "encode_example",
    "example_loss",
    "generator_ranking_accuracy",
    "gold_margin_loss",
    "held_out_candidates_path",
    "held_out_ranking",
    "load_contexts",
    "margin_ranking_loss",
    "pooled_gold_nll",
    "ranking_sets",
    "read_candidates",
    "rescore_candidates",
    "sample_replies",
    "save_generator",
    "sequence_scores",
    "split_contexts",
    "term_gradients",
    "token_nll",
    "write_held_out_candidates",
]
