"""Preference-model commands: ``train``, ``evaluate``, ``score``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from ..config import load_config
from ..evaluation import evaluate_run
from ..scoring import score_file
from ..train import train
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
    print(f"\nrun directory: {result.run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    out = evaluate_run(
        args.run,
        data=args.data,
        data_format=args.format,
        options=_parse_options(args.option),
        strict=args.strict,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
    )
    columns = {"model": out["model"]}
    if "constant" in out:
        columns["train-mean predictor"] = out["constant"]
    print(f"{out['data']} ({out['n']} items)")
    print(format_table(columns))
    output = Path(args.output) if args.output else Path(args.run) / "eval" / _eval_name(args.data)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(f"\nwritten: {output}")
    return 0


def _eval_name(data: str | None) -> str:
    return "valid.json" if data is None else f"{Path(data).stem}.json"


def cmd_score(args: argparse.Namespace) -> int:
    n = score_file(
        args.run,
        args.input,
        args.output,
        rule=args.rule,
        batch_size=args.batch_size,
        checkpoint=args.checkpoint,
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
    p.add_argument("--input", required=True, help="JSONL with context (optional) and response")
    p.add_argument("--output", required=True, help="JSONL written with probs and score")
    p.add_argument(
        "--rule", default="expected-utility", choices=["expected-utility", "worst-class"]
    )
    p.add_argument("--checkpoint", default="best", help="best | last")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=cmd_score)
