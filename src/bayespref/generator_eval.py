"""Evaluate a calibrated generator against its base model (``bayespref evaluate-generator``).

Both generators answer the same contexts with the same decoding settings and seed
(:func:`bayespref.decoding.decode`); a judge (:mod:`bayespref.judges`) scores every answer, and
the two are compared item by item. The report is written by :mod:`bayespref.generator_report`.

Metrics (:data:`GENERATOR_METRICS`, each with ``higher_is_better``; ``None`` marks a
descriptive quantity that must not drive selection). ``N`` items, ``u_i`` the judged utility:

- ``utility``: mean judged utility, with a 95% t-interval ``mean +- t_{0.975, N-1} s / sqrt(N)``.
- ``win_rate``: paired, calibrated against base: ``(wins + ties / 2) / N``. A tie is an identical
  answer or ``|u_cal - u_base| <= tie_tolerance``. 95% Wilson score interval on that proportion
  (ties count as half a win, so the interval is slightly conservative: a tie has less variance
  than a coin flip).
- ``utility_difference``: paired mean of ``u_cal - u_base`` with a 95% t-interval.
- ``gold_perplexity``: ``exp(sum NLL / sum tokens)`` of the gold responses under each generator,
  teacher forced after the same prompt the generator answers (chat template included); the gold
  is tokenised on its own, followed by the turn's stop token, as the model would emit it.
- ``bleu``: sacrebleu corpus BLEU (0-100) against the gold; ``rouge_l``: mean rouge-score ROUGE-L
  F-measure (with stemming) against the gold. Only items with a gold response count.
- ``distinct_1``, ``distinct_2``: distinct n-grams / all n-grams over all answers (Li et al.
  2016), on lower-cased word and punctuation tokens.
- ``mean_length``: mean answer length in generator tokens (stop token excluded).
- ``ranking`` (with ``candidates``: a candidate file): each generator's own ranking accuracy on
  the file's candidate sets, ``P(y) = sum log p / |y|^a`` ordering pairs as the file's scores
  do (``rank_acc_pm``: the preference model that ranked them) and as the judge does
  (``rank_acc_judge``); :mod:`bayespref.calibration.ranking`, random 0.5.

Contexts come from a JSONL file ``{"id", "context" (string or list of turns), "gold"}``,
``synthetic:N:SEED`` or ``convabuse:PATH`` (:func:`~bayespref.data.contexts.contexts_from_spec`).
Generators are loaded and prompted exactly as in calibration (:mod:`bayespref.lm`: chat turns
alternating back from the last, user, turn; an answer ends at eos = ``<|im_end|>`` for chat
models), and the gold NLL is :func:`bayespref.lm.gold_nll`. The command's options are a
:class:`GeneratorEvalConfig` (a YAML file plus ``key=value`` overrides).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sacrebleu
from numpy.typing import ArrayLike
from rouge_score import rouge_scorer

from .calibration import CandidateRanking, read_candidates
from .config import ConfigError, DecodingConfig, field_help, section_default
from .data.contexts import Context, contexts_from_spec
from .decoding import ANSWER_DECODING, answer_decoding, decode
from .judges import JUDGE_RULES, Judge, load_judge
from .lm import GENERATOR_DIR, PACKAGED_GENERATORS, Generator, gold_nll, load_generator
from .stats import mean_t_interval, paired_outcomes, win_rate

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class GeneratorMetric:
    """A generator metric's name, direction (``None``: descriptive only) and meaning."""

    name: str
    higher_is_better: bool | None
    description: str


GENERATOR_METRICS: dict[str, GeneratorMetric] = {
    m.name: m
    for m in (
        GeneratorMetric("utility", True, "mean judged utility (95% t-interval)"),
        GeneratorMetric("gold_perplexity", False, "token perplexity of the gold responses"),
        GeneratorMetric("bleu", True, "sacrebleu corpus BLEU against the gold (0-100)"),
        GeneratorMetric("rouge_l", True, "mean ROUGE-L F-measure against the gold"),
        GeneratorMetric("distinct_1", True, "distinct unigrams / all unigrams"),
        GeneratorMetric("distinct_2", True, "distinct bigrams / all bigrams"),
        GeneratorMetric("mean_length", None, "mean answer length in tokens"),
        GeneratorMetric("win_rate", True, "calibrated beats base, ties = 1/2 (95% Wilson)"),
        GeneratorMetric("utility_difference", True, "paired mean of u_cal - u_base (95% t)"),
    )
}

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (``"Don't!"`` -> ``["don't", "!"]``)."""
    return _WORD.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of all texts (corpus level); nan if there are none."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = words(text)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return len(seen) / total if total else math.nan


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacrebleu corpus BLEU (0-100, default 13a tokenisation), one reference per item."""
    if not hypotheses:
        return math.nan
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def rouge_l_f(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per item ROUGE-L F-measure (rouge-score, Porter stemming), shape (N,)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array(
        [
            scorer.score(r, h)["rougeL"].fmeasure
            for h, r in zip(hypotheses, references, strict=True)
        ],
        dtype=np.float64,
    )


def perplexity(nll_sums: ArrayLike, token_counts: ArrayLike) -> float:
    """Token-level perplexity ``exp(sum NLL / sum tokens)``; nan without tokens."""
    total = float(np.sum(token_counts))
    return math.exp(float(np.sum(nll_sums)) / total) if total else math.nan


def json_safe(x: Any) -> Any:
    """A copy of ``x`` that ``json.dumps`` writes as standard JSON: nan and inf become null
    (JSON has neither), numpy scalars become Python numbers, tuples become lists."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return json_safe(x.item())
    return x


# --------------------------------------------------------------------------------------------
# Running the generators


def gold_examples(generator: Generator, contexts: Sequence[Context], golds: Sequence[str]):
    """(prompt ids, gold ids + eos) pairs for :func:`bayespref.lm.gold_nll`."""
    if len(contexts) != len(golds):
        raise ValueError(f"{len(contexts)} contexts but {len(golds)} gold responses")
    return [(generator.prompt_ids(c), generator.target_ids(g)) for c, g in zip(contexts, golds)]


@dataclass
class GeneratorOutputs:
    """One generator's answers and gold log-likelihoods, per item."""

    name: str
    texts: list[str]
    lengths: list[int]
    gold_nll: np.ndarray  # (N,) nan where there is no gold
    gold_tokens: np.ndarray  # (N,)
    ranking: dict[str, float] | None = None  # rank_acc_<reference> on the candidate sets


def run_generator(
    generator: Any,
    items: Sequence[dict],
    decoding: DecodingConfig,
    name: str | None = None,
    *,
    chat_template: bool | None = None,
    ranking: CandidateRanking | None = None,
) -> GeneratorOutputs:
    """Decode every context and score every gold with one generator (and, with ``ranking``,
    measure its own ranking accuracy on those candidate sets).

    ``generator``: a loaded :class:`~bayespref.lm.Generator`, or a spec for
    :func:`~bayespref.lm.load_generator` (a name, a folder, a calibration run or a
    :class:`~bayespref.lm.GeneratorConfig`), loaded with ``chat_template`` when given (None: the
    spec's own setting; a name or folder then uses the chat template).
    """
    if not isinstance(generator, Generator):
        name = name or str(generator)
        settings = {} if chat_template is None else {"chat_template": chat_template}
        generator = load_generator(generator, **settings)
    name = name or generator.name
    contexts = [it["context"] for it in items]
    texts, lengths = decode(generator, contexts, decoding)
    with_gold = [i for i, it in enumerate(items) if it.get("gold") is not None]
    nll = np.full(len(items), math.nan)
    tokens = np.zeros(len(items), dtype=np.int64)
    if with_gold:
        examples = gold_examples(
            generator, [contexts[i] for i in with_gold], [items[i]["gold"] for i in with_gold]
        )
        sums, counts = gold_nll(
            generator.model, examples, generator.pad_token_id, batch_size=decoding.batch_size
        )
        nll[with_gold] = sums
        tokens[with_gold] = counts
    logger.info("%s: %d answers, mean length %.1f tokens", name, len(texts), np.mean(lengths))
    accuracy = ranking.accuracy(generator) if ranking is not None else None
    return GeneratorOutputs(name, texts, lengths, nll, tokens, accuracy)


def generator_metrics(outputs: GeneratorOutputs, items: Sequence[dict], utilities) -> dict:
    """The unpaired metrics of one generator (see :data:`GENERATOR_METRICS`)."""
    with_gold = [i for i, it in enumerate(items) if it.get("gold") is not None]
    hyps = [outputs.texts[i] for i in with_gold]
    refs = [items[i]["gold"] for i in with_gold]
    return {
        "utility": mean_t_interval(utilities),
        "gold_perplexity": perplexity(outputs.gold_nll[with_gold], outputs.gold_tokens[with_gold]),
        "bleu": corpus_bleu(hyps, refs),
        "rouge_l": float(np.mean(rouge_l_f(hyps, refs))) if hyps else math.nan,
        "distinct_1": distinct_n(outputs.texts, 1),
        "distinct_2": distinct_n(outputs.texts, 2),
        "mean_length": float(np.mean(outputs.lengths)) if outputs.lengths else math.nan,
    }


# --------------------------------------------------------------------------------------------
# Comparing two generators


def evaluate_generators(
    base: Any,
    calibrated: Any,
    contexts: Sequence[dict],
    judge: Judge,
    decoding: DecodingConfig | None = None,
    *,
    num_examples: int = 5,
    tie_tolerance: float = 1e-6,
    names: tuple[str, str] | None = None,
    chat_template: bool | None = None,
    ranking: CandidateRanking | None = None,
) -> dict:
    """Compare a calibrated generator with its base on the same contexts; returns a report dict.

    ``base`` and ``calibrated`` are loaded :class:`~bayespref.lm.Generator` objects or specs for
    :func:`~bayespref.lm.load_generator` (loaded one at a time, to keep one model in memory,
    with ``chat_template`` when given). ``decoding`` defaults to :func:`answer_decoding`
    (greedy). ``contexts``: dicts with ``id``, ``context`` and ``gold`` (may be None). The
    report holds, per generator, the metrics of :data:`GENERATOR_METRICS`, the paired
    ``win_rate`` and ``utility_difference``, the directions, ``num_examples`` side-by-side
    examples and the per-item values; with ``ranking``, each generator's own ranking accuracy
    on those candidate sets (``report["ranking"]``).
    """
    decoding = decoding or answer_decoding()
    items = list(contexts)
    if not items:
        raise ValueError("no contexts to evaluate on")
    if names is None:  # a spec names its generator; a loaded one is "base" / "calibrated"
        names = (
            "base" if isinstance(base, Generator) else str(base),
            "calibrated" if isinstance(calibrated, Generator) else str(calibrated),
        )
    base_out = run_generator(
        base, items, decoding, name=names[0] or "base", chat_template=chat_template,
        ranking=ranking,
    )  # fmt: skip
    cal_out = run_generator(
        calibrated, items, decoding, name=names[1] or "calibrated", chat_template=chat_template,
        ranking=ranking,
    )  # fmt: skip
    report = compare_outputs(
        base_out, cal_out, items, judge, decoding, num_examples=num_examples,
        tie_tolerance=tie_tolerance,
    )  # fmt: skip
    if ranking is not None:
        report["ranking"] = {
            "base": base_out.ranking,
            "calibrated": cal_out.ranking,
            "sets": len(ranking.rows),
            "candidates": sum(len(row["candidates"]) for row in ranking.rows),
            "pairs": ranking.pairs(),
            "length_penalty": ranking.length_penalty,
        }
    return report


def compare_outputs(
    base_out: GeneratorOutputs,
    cal_out: GeneratorOutputs,
    items: Sequence[dict],
    judge: Judge,
    decoding: DecodingConfig,
    *,
    num_examples: int = 5,
    tie_tolerance: float = 1e-6,
) -> dict:
    """The report of :func:`evaluate_generators` from both generators' outputs (so that one
    base run can be compared with several calibrated generators)."""
    ctx = [it["context"] for it in items]
    u_base = np.asarray(judge.utilities(ctx, base_out.texts), dtype=np.float64)  # (N,)
    u_cal = np.asarray(judge.utilities(ctx, cal_out.texts), dtype=np.float64)  # (N,)
    with_gold = [i for i, it in enumerate(items) if it.get("gold") is not None]
    u_gold = np.full(len(items), math.nan)
    if with_gold:
        u_gold[with_gold] = judge.utilities(
            [ctx[i] for i in with_gold], [items[i]["gold"] for i in with_gold]
        )
    same = [a == b for a, b in zip(base_out.texts, cal_out.texts, strict=True)]
    outcomes = paired_outcomes(u_cal, u_base, same, tie_tolerance)

    per_item = []
    for i, it in enumerate(items):
        per_item.append(
            {
                "id": it["id"],
                "context": it["context"],
                "gold": it.get("gold"),
                "base": base_out.texts[i],
                "calibrated": cal_out.texts[i],
                "base_utility": float(u_base[i]),
                "calibrated_utility": float(u_cal[i]),
                "gold_utility": float(u_gold[i]),
                "outcome": float(outcomes[i]),
                "base_gold_nll": float(base_out.gold_nll[i]),
                "calibrated_gold_nll": float(cal_out.gold_nll[i]),
                "gold_tokens": int(base_out.gold_tokens[i]),
            }
        )
    report: dict[str, Any] = {
        "n": len(items),
        "n_with_gold": len(with_gold),
        "judge": judge.name,
        "decoding": asdict(decoding),
        "generators": {"base": base_out.name, "calibrated": cal_out.name},
        "base": generator_metrics(base_out, items, u_base),
        "calibrated": generator_metrics(cal_out, items, u_cal),
        "gold_utility": mean_t_interval(u_gold[with_gold]),
        "paired": {
            "win_rate": win_rate(outcomes),
            "utility_difference": mean_t_interval(u_cal - u_base),
            "tie_tolerance": tie_tolerance,
        },
        "higher_is_better": {n: m.higher_is_better for n, m in GENERATOR_METRICS.items()},
        "examples": per_item[:num_examples],
        "items": per_item,
    }
    logger.info(
        "utility base %.4f, calibrated %.4f; win rate %.3f",
        report["base"]["utility"]["mean"],
        report["calibrated"]["utility"]["mean"],
        report["paired"]["win_rate"]["rate"],
    )
    return report


# --------------------------------------------------------------------------------------------
# The command's config


@dataclass
class GeneratorEvalConfig:
    """``bayespref evaluate-generator``: which generators, on which contexts, judged how.

    ``base``, ``calibrated``, ``contexts`` and ``judge`` have no default and must be set.
    """

    base: str | None = field_help(
        None,
        f"base generator: a model folder, a Hub name or {', '.join(PACKAGED_GENERATORS)} "
        "(required)",
    )
    calibrated: str | None = field_help(
        None, "calibrated generator: a calibration run directory (generator/ inside) or a model "
        "(required)"
    )  # fmt: skip
    chat_template: bool = field_help(
        True, "wrap each context in the tokenizer's chat template (both generators)"
    )
    contexts: str | None = field_help(
        None, "contexts: JSONL {id, context, gold}, synthetic:N:SEED or convabuse:CSV (required)"
    )
    limit: int | None = field_help(None, "evaluate on the first N contexts only (null: all)")
    judge: str | None = field_help(
        None, "'oracle' (synthetic contexts only) or a preference-model run directory (required)"
    )
    rule: str = field_help(
        "expected-utility", "preference-model judge: expected-utility | worst-class"
    )
    decoding: DecodingConfig = section_default(DecodingConfig, **ANSWER_DECODING)
    tie_tolerance: float = field_help(
        1e-6, "a pair is a tie when |u_cal - u_base| <= this (or the answers are identical)"
    )
    num_examples: int = field_help(5, "side-by-side examples kept in the report")
    candidates: str | None = field_help(
        None,
        "a candidate file (bayespref generate, a calibration run's candidates.eval.jsonl): each "
        "generator's own ranking accuracy on its sets, against the judge's utilities and the "
        "scores of the PM that ranked the file (null: off)",
    )
    length_penalty: float = field_help(
        1.0, "a in P(y) = sum log p / |y|^a for that ranking (calibration's loss.length_penalty)"
    )
    output: str | None = field_help(
        None,
        "folder for eval.json and eval.md (null: <calibrated>/eval for a calibration run, "
        "else eval-generator)",
    )

    def __post_init__(self) -> None:
        missing = [k for k in ("base", "calibrated", "contexts", "judge") if not getattr(self, k)]
        if missing:
            raise ConfigError(
                f"evaluate-generator needs {', '.join(missing)} (a config key or --{missing[0]})"
            )
        if self.rule not in JUDGE_RULES:
            raise ConfigError(f"rule must be one of {'|'.join(JUDGE_RULES)}, got {self.rule!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 or null, got {self.limit}")
        if not (math.isfinite(self.tie_tolerance) and self.tie_tolerance >= 0):
            raise ConfigError(
                f"tie_tolerance must be a finite number >= 0, got {self.tie_tolerance}"
            )
        if self.num_examples < 0:
            raise ConfigError(f"num_examples must be >= 0, got {self.num_examples}")
        if not (math.isfinite(self.length_penalty) and self.length_penalty >= 0):
            raise ConfigError(f"length_penalty must be >= 0, got {self.length_penalty}")

    @property
    def report_dir(self) -> Path:
        """Where eval.json and eval.md go: ``output``, else inside the calibration run."""
        if self.output:
            return Path(self.output)
        if (Path(str(self.calibrated)) / GENERATOR_DIR).is_dir():
            return Path(str(self.calibrated)) / "eval"
        return Path("eval-generator")


def evaluate_from_config(config: GeneratorEvalConfig) -> dict:
    """Run the comparison a :class:`GeneratorEvalConfig` describes; returns the report (with the
    contexts spec and the chat-template setting recorded)."""
    items = contexts_from_spec(str(config.contexts))
    if config.limit is not None:
        items = items[: config.limit]
    judge = load_judge(
        str(config.judge), rule=config.rule, batch_size=max(config.decoding.batch_size, 32)
    )
    ranking = None
    if config.candidates:
        meta, rows = read_candidates(config.candidates)
        contexts = [row["context"] for row in rows for _ in row["candidates"]]
        texts = [c["text"] for row in rows for c in row["candidates"]]
        references = {"judge": np.asarray(judge.utilities(contexts, texts), dtype=np.float64)}
        if meta.get("settings", {}).get("scorer", {}).get("run"):  # else beam scores: no PM
            references["pm"] = np.array([c["score"] for row in rows for c in row["candidates"]])
        ranking = CandidateRanking(rows, references, config.length_penalty)
    report = evaluate_generators(
        config.base,
        config.calibrated,
        items,
        judge,
        config.decoding,
        num_examples=config.num_examples,
        tie_tolerance=config.tie_tolerance,
        chat_template=config.chat_template,
        ranking=ranking,
    )
    report["contexts"] = config.contexts
    if config.candidates:
        report["ranking"]["file"] = config.candidates
    report["chat_template"] = config.chat_template
    return report
