"""Evaluate a calibrated generator against its base model (``bayespref evaluate-generator``).

Both generators answer the same contexts with the same decoding settings and seed; a judge
scores every answer, and the two are compared item by item.

Judges (:func:`load_judge`): ``"oracle"`` is the synthetic data's true expected utility
(:class:`~bayespref.data.synthetic.SyntheticOracle`, only meaningful on synthetic contexts); a
preference-model run directory scores with ``S = sum_l u_l q(l | x)`` (METHOD section 4) or
the worst-class rule.

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

Contexts come from a JSONL file ``{"id", "context" (string or list of turns), "gold"}``,
``synthetic:N:SEED`` or ``convabuse:PATH`` (:func:`~bayespref.data.contexts.contexts_from_spec`).
Generators are loaded and prompted exactly as in calibration (:mod:`bayespref.lm`: chat turns
alternating back from the last, user, turn; an answer ends at eos = ``<|im_end|>`` for chat
models), and the gold NLL is :func:`bayespref.lm.gold_nll`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .data.contexts import Context, contexts_from_spec
from .lm import GENERATOR_DIR, PACKAGED_GENERATORS, Generator, gold_nll, left_pad, load_generator
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
    import sacrebleu

    if not hypotheses:
        return math.nan
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def rouge_l_f(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per item ROUGE-L F-measure (rouge-score, Porter stemming), shape (N,)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return np.array(
        [
            scorer.score(r, h)["rougeL"].fmeasure
            for h, r in zip(hypotheses, references, strict=True)
        ],
        dtype=np.float64,
    )


def perplexity(nll_sums: Sequence[float], token_counts: Sequence[int]) -> float:
    """Token-level perplexity ``exp(sum NLL / sum tokens)``; nan without tokens."""
    total = float(np.sum(token_counts))
    return math.exp(float(np.sum(nll_sums)) / total) if total else math.nan


# --------------------------------------------------------------------------------------------
# Judges


class Judge(Protocol):
    name: str

    def utilities(self, contexts: Sequence[Context], responses: Sequence[str]) -> np.ndarray: ...


class OracleJudge:
    """The synthetic data's true expected utility ``sum_l u_l p*(l | x)``."""

    name = "oracle"

    def __init__(self) -> None:
        from .data.synthetic import SyntheticOracle

        self.oracle = SyntheticOracle()

    def utilities(self, contexts: Sequence[Context], responses: Sequence[str]) -> np.ndarray:
        return self.oracle.utilities(zip(contexts, responses, strict=True))


class PreferenceModelJudge:
    """A trained preference model's score (``rule``: expected-utility or worst-class)."""

    def __init__(
        self,
        run_dir: str | Path,
        rule: str = "expected-utility",
        batch_size: int = 64,
        checkpoint: str = "best",
    ) -> None:
        from .model import PreferenceModel

        if rule not in ("expected-utility", "worst-class"):
            raise ValueError(f"rule must be expected-utility or worst-class, got {rule!r}")
        self.model = PreferenceModel.from_run(run_dir, checkpoint=checkpoint)
        self.rule = rule
        self.batch_size = batch_size
        self.name = f"pm:{run_dir} ({rule})"

    def utilities(self, contexts: Sequence[Context], responses: Sequence[str]) -> np.ndarray:
        return self.model.score(
            list(contexts), list(responses), rule=self.rule, batch_size=self.batch_size
        )


def load_judge(spec: str, rule: str = "expected-utility", batch_size: int = 64) -> Judge:
    """``"oracle"`` or a preference-model run directory (or model folder)."""
    if spec == "oracle":
        return OracleJudge()
    if not Path(spec).exists():
        raise FileNotFoundError(f"judge must be 'oracle' or a preference-model run, got {spec!r}")
    return PreferenceModelJudge(spec, rule=rule, batch_size=batch_size)


# --------------------------------------------------------------------------------------------
# Generators


@dataclass
class DecodingConfig:
    """How both generators answer; the same settings and seed are used for each."""

    method: str = field(
        default="greedy",
        metadata={"help": "greedy | diverse-beam (the best hypothesis of diverse beam search)"},
    )
    max_new_tokens: int = field(default=40, metadata={"help": "at most this many new tokens"})
    min_new_tokens: int = field(default=0, metadata={"help": "the stop token is forbidden before"})
    chat_template: bool = field(
        default=True, metadata={"help": "wrap each context in the tokenizer's chat template"}
    )
    batch_size: int = field(default=8, metadata={"help": "contexts decoded per forward pass"})
    seed: int = field(default=0, metadata={"help": "torch seed set before each generator decodes"})
    num_beams: int = field(default=10, metadata={"help": "diverse-beam: K beams"})
    num_beam_groups: int = field(default=10, metadata={"help": "diverse-beam: G groups"})
    diversity_penalty: float = field(default=4.0, metadata={"help": "diverse-beam: delta"})
    length_penalty: float = field(default=1.0, metadata={"help": "diverse-beam: length penalty"})

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "diverse-beam"):
            raise ValueError(f"decoding method must be greedy or diverse-beam, got {self.method!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must lie in [0, max_new_tokens={self.max_new_tokens}], "
                f"got {self.min_new_tokens}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.method == "diverse-beam":
            self.beam_config([0])  # validates the beam settings now, not mid-evaluation

    def beam_config(self, stop_ids: list[int], pad_id: int | None = None):
        from .generation import DiverseBeamConfig

        return DiverseBeamConfig(
            num_beams=self.num_beams,
            num_beam_groups=self.num_beam_groups,
            diversity_penalty=self.diversity_penalty,
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            length_penalty=self.length_penalty,
            num_return_sequences=1,
            eos_token_id=stop_ids or None,
            pad_token_id=pad_id,
        )


def decode(
    generator: Generator, contexts: Sequence[Context], decoding: DecodingConfig
) -> tuple[list[str], list[int]]:
    """Each context's answer text (up to the first eos) and its length in tokens."""
    import torch

    from .generation import diverse_beam_search

    model = generator.model
    device = next(model.parameters()).device
    torch.manual_seed(decoding.seed)
    texts: list[str] = []
    lengths: list[int] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(contexts), decoding.batch_size):
            chunk = contexts[start : start + decoding.batch_size]
            input_ids, attention_mask = left_pad(
                [generator.prompt_ids(c) for c in chunk], generator.pad_token_id
            )
            input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
            if decoding.method == "greedy":
                sequences = _greedy(generator, input_ids, attention_mask, decoding)
            else:
                config = decoding.beam_config([generator.eos_token_id], generator.pad_token_id)
                sequences = diverse_beam_search(model, input_ids, attention_mask, config).sequences
            for row in sequences[:, input_ids.shape[1] :].tolist():  # (B, T_new)
                text, length = generator.decode_new(row)
                texts.append(text)
                lengths.append(length)
            logger.debug("decoded %d/%d contexts", len(texts), len(contexts))
    finally:
        model.train(was_training)
    return texts, lengths


def _greedy(generator: Generator, input_ids, attention_mask, decoding: DecodingConfig):
    import torch
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=decoding.max_new_tokens,
        min_new_tokens=decoding.min_new_tokens,
        eos_token_id=generator.eos_token_id,
        pad_token_id=generator.pad_token_id,
    )
    with torch.no_grad():
        return generator.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=config
        )


def gold_examples(generator: Generator, contexts: Sequence[Context], golds: Sequence[str]):
    """(prompt ids, gold ids + eos) pairs for :func:`bayespref.lm.gold_nll`."""
    if len(contexts) != len(golds):
        raise ValueError(f"{len(contexts)} contexts but {len(golds)} gold responses")
    return [(generator.prompt_ids(c), generator.target_ids(g)) for c, g in zip(contexts, golds)]


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class GeneratorOutputs:
    """One generator's answers and gold log-likelihoods, per item."""

    name: str
    texts: list[str]
    lengths: list[int]
    gold_nll: np.ndarray  # (N,) nan where there is no gold
    gold_tokens: np.ndarray  # (N,)


def run_generator(
    generator: str | Path | Generator,
    items: Sequence[dict],
    decoding: DecodingConfig,
    name: str | None = None,
) -> GeneratorOutputs:
    """Decode every context and score every gold with one generator (loaded if given by path,
    with ``decoding.chat_template``)."""
    if not isinstance(generator, Generator):
        name = name or str(generator)
        generator = load_generator(generator, chat_template=decoding.chat_template)
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
    return GeneratorOutputs(name, texts, lengths, nll, tokens)


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


def evaluate_generators(
    base: str | Path | Generator,
    calibrated: str | Path | Generator,
    contexts: Sequence[dict],
    judge: Judge,
    decoding: DecodingConfig | None = None,
    *,
    num_examples: int = 5,
    tie_tolerance: float = 1e-6,
    names: tuple[str, str] | None = None,
) -> dict:
    """Compare a calibrated generator with its base on the same contexts; returns a report dict.

    ``base`` and ``calibrated`` are generator specs for :func:`~bayespref.lm.load_generator`
    (loaded one at a time, to keep one model in memory) or loaded :class:`~bayespref.lm.Generator`
    objects. ``contexts``: dicts with
    ``id``, ``context`` and ``gold`` (may be None). The report holds, per generator, the metrics
    of :data:`GENERATOR_METRICS`, the paired ``win_rate`` and ``utility_difference``, the
    directions, ``num_examples`` side-by-side examples and the per-item values.
    """
    decoding = decoding or DecodingConfig()
    items = list(contexts)
    if not items:
        raise ValueError("no contexts to evaluate on")
    names = names or (
        None if isinstance(base, Generator) else str(base),
        None if isinstance(calibrated, Generator) else str(calibrated),
    )
    base_out = run_generator(base, items, decoding, name=names[0] or "base")
    cal_out = run_generator(calibrated, items, decoding, name=names[1] or "calibrated")
    return compare_outputs(
        base_out, cal_out, items, judge, decoding, num_examples=num_examples,
        tie_tolerance=tie_tolerance,
    )  # fmt: skip


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
    u_base = np.asarray(judge.utilities(ctx, base_out.texts), dtype=np.float64)
    u_cal = np.asarray(judge.utilities(ctx, cal_out.texts), dtype=np.float64)
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
    report = {
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


def _json_safe(x: Any) -> Any:
    """nan and inf become null (JSON has neither)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        return _json_safe(x.item())
    return x


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _fmt_ci(d: dict) -> str:
    return f"{_fmt(d['mean'])} [{_fmt(d['low'])}, {_fmt(d['high'])}]"


def format_markdown(report: dict) -> str:
    """A short markdown table of the report: one row per metric, one column per generator."""
    arrow = {True: "↑", False: "↓", None: "(ref)"}
    lines = [
        f"Generator evaluation: {report['n']} contexts ({report['n_with_gold']} with gold), "
        f"judge {report['judge']}, {report['decoding']['method']} decoding.",
        "",
        "| metric | | base | calibrated |",
        "|---|---|---|---|",
    ]
    for name in ("utility", "gold_perplexity", "bleu", "rouge_l", "distinct_1", "distinct_2"):
        lines.append(_row(name, arrow, report))
    lines.append(_row("mean_length", arrow, report))
    w = report["paired"]["win_rate"]
    d = report["paired"]["utility_difference"]
    lines += [
        "",
        f"- win rate of calibrated over base (ties = 1/2) ↑: {_fmt(w['rate'])} "
        f"[{_fmt(w['low'])}, {_fmt(w['high'])}] 95% Wilson; "
        f"{w['wins']} wins, {w['ties']} ties, {w['losses']} losses",
        f"- utility difference, calibrated - base ↑: {_fmt_ci(d)} 95% t",
        f"- gold responses' utility (ref): {_fmt_ci(report['gold_utility'])}",
        "",
    ]
    return "\n".join(lines)


def _row(name: str, arrow: dict, report: dict) -> str:
    cells = []
    for side in ("base", "calibrated"):
        value = report[side][name]
        cells.append(_fmt_ci(value) if isinstance(value, dict) else _fmt(value))
    return (
        f"| {name} | {arrow[GENERATOR_METRICS[name].higher_is_better]} | "
        + " | ".join(cells)
        + " |"
    )


def write_report(report: dict, output_dir: str | Path) -> tuple[Path, Path]:
    """Write ``eval.json`` and ``eval.md`` into ``output_dir``; returns both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = output_dir / "eval.json", output_dir / "eval.md"
    json_path.write_text(json.dumps(_json_safe(report), indent=2), encoding="utf-8")
    md_path.write_text(format_markdown(report), encoding="utf-8")
    return json_path, md_path


# --------------------------------------------------------------------------------------------
# Command line


def make_parser(subparsers: Any = None) -> argparse.ArgumentParser:
    """The ``evaluate-generator`` parser, added to ``subparsers`` when given (TRL style)."""
    description = "Compare a calibrated generator with its base: judged utility, win rate, ..."
    if subparsers is not None:
        parser = subparsers.add_parser(
            "evaluate-generator", help=description, description=description
        )
    else:
        parser = argparse.ArgumentParser(
            prog="bayespref evaluate-generator", description=description
        )
    d = DecodingConfig()
    parser.add_argument(
        "--base",
        required=True,
        help=f"base generator: folder, Hub name or {', '.join(PACKAGED_GENERATORS)}",
    )
    parser.add_argument(
        "--calibrated", required=True, help="calibration run directory (generator/ inside) or model"
    )
    parser.add_argument(
        "--contexts",
        required=True,
        help="JSONL {id, context, gold}, synthetic:N:SEED or convabuse:CSV",
    )
    parser.add_argument("--judge", required=True, help="'oracle' or a preference-model run dir")
    parser.add_argument(
        "--rule", default="expected-utility", choices=["expected-utility", "worst-class"]
    )
    parser.add_argument(
        "--output", help="folder for eval.json and eval.md (default: <calibrated run>/eval)"
    )
    parser.add_argument("--decoding", default=d.method, choices=["greedy", "diverse-beam"])
    parser.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    parser.add_argument("--min-new-tokens", type=int, default=d.min_new_tokens)
    parser.add_argument(
        "--no-chat-template", action="store_true", help="feed the raw context, no chat template"
    )
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--num-beams", type=int, default=d.num_beams)
    parser.add_argument("--num-beam-groups", type=int, default=d.num_beam_groups)
    parser.add_argument("--diversity-penalty", type=float, default=d.diversity_penalty)
    parser.add_argument("--length-penalty", type=float, default=d.length_penalty)
    parser.add_argument("--examples", type=int, default=5, help="side-by-side examples kept")
    parser.add_argument("--limit", type=int, help="evaluate on the first N contexts only")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Handler of ``bayespref evaluate-generator``."""
    decoding = DecodingConfig(
        method=args.decoding,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        chat_template=not args.no_chat_template,
        batch_size=args.batch_size,
        seed=args.seed,
        num_beams=args.num_beams,
        num_beam_groups=args.num_beam_groups,
        diversity_penalty=args.diversity_penalty,
        length_penalty=args.length_penalty,
    )
    items = contexts_from_spec(args.contexts)
    if args.limit is not None:
        items = items[: args.limit]
    judge = load_judge(args.judge, rule=args.rule, batch_size=max(args.batch_size, 32))
    report = evaluate_generators(
        args.base, args.calibrated, items, judge, decoding, num_examples=args.examples
    )
    report["contexts"] = args.contexts
    if args.output:
        output = Path(args.output)
    elif (Path(args.calibrated) / GENERATOR_DIR).is_dir():
        output = Path(args.calibrated) / "eval"
    else:
        output = Path("eval-generator")
    json_path, md_path = write_report(report, output)
    # the CLI handler reports its result (library code above only logs)
    print(format_markdown(report))  # noqa: T201
    print(f"written: {json_path}\n         {md_path}")  # noqa: T201
    return 0


if __name__ == "__main__":
    import sys

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main(make_parser().parse_args()))
