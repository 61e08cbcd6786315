"""What a calibration run is configured with (``bayespref generate`` / ``bayespref calibrate``).

:class:`CalibrationConfig` is a :class:`~bayespref.config.RunConfig` (name, output directory,
seed, evaluation / checkpoint / failure policy) with the shared sections of
:mod:`bayespref.config` (``optim``, ``peft``, ``decoding`` with calibration's own defaults)
and the sections only calibration has: the generator, the contexts, the scorer that ranks the
candidates, and the generator loss. Read one with
``load_yaml(CalibrationConfig, path, overrides)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import (
    ConfigError,
    DecodingConfig,
    OptimConfig,
    PeftConfig,
    RunConfig,
    field_help,
    section_default,
)
from ..lm import GeneratorConfig

# how the generator scores a sequence P(y) (bayespref.calibration.losses.sequence_scores)
SCORINGS = ("length-normalised", "mean-prob")
# adapters for a generator: prefix tuning is for the preference model's encoder only
CALIBRATION_PEFT_METHODS = ("none", "lora")
# where a context's candidates come from (annotate-synthetic's `source` has the same values)
CANDIDATE_SOURCES = ("beams", "samples", "both")
# what the MLE term trains on (CalibrationLossConfig.mle_target)
MLE_TARGETS = ("reference", "top-candidate")


@dataclasses.dataclass
class ContextsConfig:
    """Where the training contexts (each with a gold reply) come from, and the held-out share."""

    source: str = field_help(
        "synthetic",
        "synthetic (make_synthetic_contexts) | jsonl ({id, context, gold} rows; gold may be left "
        "out with loss.mle_target=top-candidate) | convabuse "
        "(split CSV: context up to the agent's turn, gold = the real user turn, kept only where "
        "the annotators' majority found no abuse)",
    )
    path: str | None = field_help(None, "the JSONL file or ConvAbuse CSV (not for synthetic)")
    n: int | None = field_help(
        200, "synthetic: number of contexts; jsonl/convabuse: keep at most this many (null: all)"
    )
    seed: int = field_help(1, "synthetic: generator seed; jsonl/convabuse: seed of the subsample")
    n_eval: int | None = field_help(
        None, "held-out contexts for evaluation (overrides eval_fraction)"
    )
    eval_fraction: float = field_help(0.1, "fraction held out for evaluation when n_eval is null")

    def __post_init__(self):
        if self.source not in ("synthetic", "jsonl", "convabuse"):
            raise ConfigError(f"data.source must be synthetic|jsonl|convabuse, got {self.source!r}")
        if self.source != "synthetic" and not self.path:
            raise ConfigError(f"data.path is required for data.source={self.source}")
        if self.n is not None and self.n < 1:
            raise ConfigError(f"data.n must be >= 1 or null, got {self.n}")
        if self.n_eval is not None and self.n_eval < 0:
            raise ConfigError(f"data.n_eval must be >= 0, got {self.n_eval}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"data.eval_fraction must be in [0, 1), got {self.eval_fraction}")


@dataclasses.dataclass
class ScorerConfig:
    """The preference model that ranks the candidates (or none: the generator's own score)."""

    run: str | None = field_help(
        None,
        "preference or reward model run directory (bayespref train / train-pairwise); null: "
        "rank by the generator's own score: a beam's search score, a sample's mean token "
        "log-probability (texts to re-score later: rescore_candidates)",
    )
    checkpoint: str = field_help("best", "best | last | a folder under <run>/checkpoint/")
    rule: str = field_help("expected-utility", "expected-utility | worst-class (METHOD section 4)")
    batch_size: int = field_help(64, "pairs per preference-model forward")

    def __post_init__(self):
        if self.rule not in ("expected-utility", "worst-class"):
            raise ConfigError(f"scorer.rule must be expected-utility|worst-class, got {self.rule}")


@dataclasses.dataclass
class SamplingConfig:
    """Ancestral sampling from the generator (lengths: decoding.max_new_tokens, min_new_tokens)."""

    num_samples: int = field_help(8, "samples per context")
    temperature: float = field_help(1.0, "softmax temperature")
    top_p: float = field_help(0.95, "nucleus: keep the smallest set of tokens with this mass")
    top_k: int = field_help(0, "keep the k most likely tokens (0: off)")

    def __post_init__(self):
        if self.num_samples < 1:
            raise ConfigError(f"sampling.num_samples must be >= 1, got {self.num_samples}")
        if not self.temperature > 0:
            raise ConfigError(f"sampling.temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"sampling.top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ConfigError(f"sampling.top_k must be >= 0, got {self.top_k}")


@dataclasses.dataclass
class CalibrationLossConfig:
    """``L = w_mle * NLL(gold) + w_rank * L_rank + w_gold * L_gold`` (METHOD section 5)."""

    margin: float = field_help(0.001, "lambda: rank margin per position, L_r = sum_{i<j} ...")
    rank_weight: float = field_help(1.0, "w_rank (reference: 1 for dialogue, 0.72 for RoT)")
    mle_weight: float = field_help(1.0, "w_mle: weight of the gold reply's token NLL")
    mle_target: str = field_help(
        "reference",
        "the 'gold' the MLE (and gold) term trains on: reference (the context's reference "
        "reply) | top-candidate (the scorer's best-ranked candidate: no reference needed; with "
        "rank_weight 0 this is rejection-sampling fine-tuning on the preference model's pick)",
    )
    gold_weight: float = field_help(0.0, "w_gold: gold must score above every candidate (0: off)")
    gold_margin: float = field_help(
        0.0, "lambda_gold in sum_k max(0, P(y_k) - P(gold) + lambda_gold)"
    )
    scoring: str = field_help(
        "length-normalised",
        "P(y): length-normalised (sum log p / |y|^a, the report) | mean-prob (reference code)",
    )
    length_penalty: float = field_help(1.0, "a in P(y) = sum log p / |y|^a")

    def __post_init__(self):
        if self.scoring not in SCORINGS:
            raise ConfigError(f"loss.scoring must be one of {SCORINGS}, got {self.scoring!r}")
        if self.mle_target not in MLE_TARGETS:
            raise ConfigError(
                f"loss.mle_target must be one of {'|'.join(MLE_TARGETS)}, got {self.mle_target!r}"
            )
        if min(self.rank_weight, self.mle_weight, self.gold_weight, self.margin) < 0:
            raise ConfigError("loss weights and margin must be >= 0")


@dataclasses.dataclass
class CalibrationConfig(RunConfig):
    """A calibration run: candidates from the base generator (diverse beams, samples or both:
    ``source``), ranked by a preference model, then the generator fine-tuned on them (METHOD
    section 5)."""

    name: str = field_help("calibrate", "run name: outputs go to <output_dir>/<name>/")
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    data: ContextsConfig = dataclasses.field(default_factory=ContextsConfig)
    scorer: ScorerConfig = dataclasses.field(default_factory=ScorerConfig)
    # the beams (source beams | both): diverse beam search, every beam a candidate (METHOD
    # reference: K = G = 10); max/min_new_tokens also bound the samples
    decoding: DecodingConfig = section_default(
        DecodingConfig,
        method="diverse-beam",
        num_beams=4,
        num_beam_groups=4,
        diversity_penalty=4.0,
        max_new_tokens=40,
        min_new_tokens=10,
        length_penalty=1.0,
        early_stopping=False,
        batch_size=8,
    )
    source: str = field_help(
        "beams",
        "where each context's candidates come from: beams (diverse beam search, decoding) | "
        "samples (sampling, with decoding's max/min_new_tokens) | both (its beams, then its "
        "samples; identical texts merged with a count), all then ranked by the scorer",
    )
    sampling: SamplingConfig = section_default(SamplingConfig, num_samples=4)
    candidates: str | None = field_help(
        None, "candidate JSONL (default: <run>/candidates.jsonl); reused when settings match"
    )
    loss: CalibrationLossConfig = dataclasses.field(default_factory=CalibrationLossConfig)
    optim: OptimConfig = section_default(
        OptimConfig, lr=1e-5, weight_decay=0.0, epochs=1.0, batch_size=2, grad_accum=4
    )
    peft: PeftConfig = dataclasses.field(default_factory=PeftConfig)
    forward: str = field_help(
        "shared-context",
        "shared-context (run the context once, reuse its KV cache for gold + candidates) | "
        "naive (context repeated on every row); same losses and gradients",
    )
    eval_ranking: bool = field_help(
        True,
        "log the generator's ranking accuracy on the held-out contexts' candidates at every "
        "evaluation (rank_acc_pm; rank_acc_oracle on synthetic data); their candidates are "
        "searched once and cached beside the training ones (<candidates stem>.eval.jsonl)",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.forward not in ("shared-context", "naive"):
            raise ConfigError(f"forward must be shared-context|naive, got {self.forward!r}")
        if self.source not in CANDIDATE_SOURCES:
            raise ConfigError(
                f"source must be one of {'|'.join(CANDIDATE_SOURCES)}, got {self.source!r}"
            )
        if self.decoding.method != "diverse-beam":
            raise ConfigError(
                "candidate search is diverse beam search: decoding.method must be diverse-beam, "
                f"got {self.decoding.method!r}"
            )
        if self.peft.method not in CALIBRATION_PEFT_METHODS:
            raise ConfigError(
                f"peft.method must be none|lora for a generator (lora is merged into the saved "
                f"model), got {self.peft.method!r}"
            )

    @property
    def needs_reference(self) -> bool:
        """Whether every training context needs a reference reply (``loss.mle_target``)."""
        return self.loss.mle_target == "reference"

    def candidate_search(self) -> dict:
        """The settings of the candidate search, flat: the ``decoding`` keys, ``source`` and
        the ``sampling`` keys as ``sampling.<key>``. Two runs with equal dicts search the same
        candidates (a study gives a run whose dict differs its own search)."""
        sampling = {f"sampling.{k}": v for k, v in dataclasses.asdict(self.sampling).items()}
        return {**dataclasses.asdict(self.decoding), "source": self.source, **sampling}

    @property
    def candidates_path(self) -> Path:
        """The candidate file: ``candidates``, else ``<run>/candidates.jsonl``."""
        if self.candidates:
            return Path(self.candidates)
        return self.run_dir / "candidates.jsonl"
