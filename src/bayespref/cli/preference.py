"""Preference-model commands: ``train``, ``evaluate``, ``score``."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import yaml

from ..config import ConfigError, load_config
from ..evaluation import evaluate_run
from ..scoring import input_format, score_file, score_pairs_file
from ..train import train
from .notes import synthetic_note
from .tables import format_table


def _parse_options(items: list[str] | None) -> dict:
    options = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"--option {item!r} is not key=value")
        key, value = item.split("=", 1)
        options[key] = yaml.safe_load(value)
    return options


def cmd_train(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + (["data.strict=true"] if args.strict else [])
    config = load_config(args.config, overrides)
    result = train(config, resume=args.resume)
    if result.best_metrics:
        step = json.loads((result.run_dir / "summary.json").read_text())["best_step"]
        print(
            f"\nvalidation metrics of the best checkpoint (step {step}, by {config.select_metric}):"
        )
        columns = {f"{config.loss.name}": result.best_metrics}
        if result.baseline_metrics:
            columns["train-mean predictor"] = result.baseline_metrics
        print(format_table(columns))
        if config.data.format == "synthetic":  # why the train mean can win on soft_ce and ece
            print(synthetic_note(result.best_metrics, result.baseline_metrics))
    print(f"\nrun directory: {result.run_dir}")
    return 0


RUN_SPLIT_SOURCE = "validation split of the run"  # the source of an evaluation without --data


def cmd_evaluate(args: argparse.Namespace) -> int:
    source = RUN_SPLIT_SOURCE if args.data is None else str(Path(args.data).resolve())
    output = _eval_output(Path(args.run), args.data, source, args.output)  # checked before work
    out = evaluate_run(
        args.run,
        data=args.data,
        data_format=args.format,
        options=_parse_options(args.option),
        strict=args.strict,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
    )
    out = {**out, "source": source, "checkpoint": args.checkpoint}
    columns = {"model": out["model"]}
    if "constant" in out:
        columns["train-mean predictor"] = out["constant"]
    print(f"{out['data']} ({out['n']} items)")
    print(format_table(columns))
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=2), encoding="utf-8")
    tmp.replace(output)
    print(f"\nwritten: {output}")
    return 0


def _eval_output(run_dir: Path, data: str | None, source: str, output: str | None) -> Path:
    """Where an evaluation of ``source`` goes, never over the evaluation of another source.

    By default ``<run>/eval/valid.json`` holds the run's own validation split and a data file
    gets ``<stem>.json``; a name that is taken (``valid.json`` for a data file, or a file
    written for another source) gets ``<stem>-<8 hex of the sha256 of the source>.json``, the
    source being the data file's resolved path (or :data:`RUN_SPLIT_SOURCE`).
    An explicit ``--output`` that holds another source's evaluation, or is the data file
    itself, is refused.
    """
    if output is not None:
        path = Path(output)
        if path.is_dir():
            raise ConfigError(f"--output {path} is a directory; give a JSON file path")
        if (
            data is not None
            and path.exists()
            and Path(data).exists()
            and os.path.samefile(path, data)
        ):
            raise ConfigError(f"--output {path} is the --data file; choose another path")
        recorded = _recorded_source(path)
        if recorded not in (None, source):
            raise ConfigError(
                f"--output {path} already holds {_describe(recorded)}, not of {source}; choose "
                f"another path or remove it"
            )
        return path
    eval_dir = run_dir / "eval"
    stem = "valid" if data is None else Path(data).stem
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:8]
    names = [stem, f"{stem}-{digest}"]
    if data is not None and stem == "valid":
        names = names[1:]  # valid.json is the run's own split's
    for name in names:
        path = eval_dir / f"{name}.json"
        if _recorded_source(path) in (None, source):
            return path
    taken = eval_dir / f"{names[-1]}.json"
    raise ConfigError(
        f"{taken} already holds {_describe(_recorded_source(taken))}; pass --output to choose "
        f"where the evaluation of {source} goes"
    )


def _recorded_source(path: Path) -> str | None:
    """The data source an evaluation file records: None if there is no file, "" if it is not
    an evaluation. Files written before ``source`` was recorded name their data in ``data``
    (a path as given, resolved here)."""
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("data"), str):
        return ""
    if "source" in recorded:
        return str(recorded["source"])
    data = recorded["data"]
    return data if data == RUN_SPLIT_SOURCE else str(Path(data).resolve())


def _describe(recorded: str | None) -> str:
    return f"the evaluation of {recorded}" if recorded else "a file that is not an evaluation"


def cmd_score(args: argparse.Namespace) -> int:
    if args.pairs or input_format(args.input) == "pairs":
        n = score_pairs_file(
            args.run, args.input, args.output, args.batch_size, checkpoint=args.checkpoint
        )
        print(f"scored {n} pairs (A vs B) -> {args.output}")
        return 0
    n = score_file(
        args.run,
        args.input,
        args.output,
        rule=args.rule,
        batch_size=args.batch_size,
        checkpoint=args.checkpoint,
        per_annotator=args.per_annotator,
    )
    print(f"scored {n} pairs -> {args.output}")
    return 0


def make_parser(sub) -> None:
    """Register ``train``, ``evaluate`` and ``score``."""

    p = sub.add_parser("train", help="train a preference model -> runs/<name>/")
    p.add_argument("--config", help="YAML config (default: the built-in synthetic demo)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument(
        "--strict", action="store_true", help="refuse items with no usable label (data.strict)"
    )
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. loss.name=jsd")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a trained model against the annotators")
    p.add_argument(
        "--run", "--run-dir", dest="run", required=True, help="run directory (runs/<name>)"
    )
    p.add_argument("--data", help="data file (default: the run's validation split)")
    p.add_argument("--format", help="loader for --data (default: the run's data.format)")
    p.add_argument("--option", action="append", help="loader option key=value (repeatable)")
    p.add_argument("--strict", action="store_true", help="refuse items with no usable label")
    p.add_argument("--checkpoint", default="best", help="best | last")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--output", help="JSON output (default: <run>/eval/<data>.json)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("score", help="score (context, response) pairs from JSONL")
    p.add_argument(
        "--run", "--run-dir", dest="run", required=True, help="run directory (runs/<name>)"
    )
    p.add_argument(
        "--input",
        required=True,
        help="JSONL of single responses (context?, response) or of pairs (A vs B: any "
        "train-pairwise schema; told apart by the first row's keys)",
    )
    p.add_argument(
        "--pairs",
        action="store_true",
        help="read --input as pairs (A vs B), scored by a reward-model run: probs of A, B, "
        "tie and reward_a, reward_b",
    )
    p.add_argument("--output", required=True, help="JSONL written with probs and score")
    p.add_argument(
        "--rule", default="expected-utility", choices=["expected-utility", "worst-class"]
    )
    p.add_argument("--checkpoint", default="best", help="best | last")
    p.add_argument(
        "--per-annotator",
        action="store_true",
        help="annotator-aware runs: add annotator_probs (each annotator's q)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=cmd_score)
