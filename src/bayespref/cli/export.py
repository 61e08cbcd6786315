"""``bayespref export-pairs``: DPO preference pairs (TRL format) from a candidate file."""

from __future__ import annotations

import argparse
from typing import Any

from ..export import PROMPT_FORMATS, STRATEGIES, export_pairs
from . import export_model


def export_pairs_main(args: argparse.Namespace) -> int:
    """Handler of ``bayespref export-pairs``."""
    report = export_pairs(
        args.candidates,
        args.output,
        strategy=args.strategy,
        min_margin=args.min_margin,
        prompt_format=args.prompt_format,
    )
    print(f"{report.summary()}\nwritten: {args.output}")
    return 0


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``export-pairs`` on an argparse subparsers object."""
    description = "Write DPO preference pairs (TRL format) from a calibration candidate cache."
    parser = subparsers.add_parser("export-pairs", help=description, description=description)
    parser.add_argument(
        "--candidates", required=True, help="candidate JSONL (its <stem>.meta.json beside it)"
    )
    parser.add_argument("--output", required=True, help="pairs JSONL written")
    parser.add_argument("--strategy", default="best-vs-worst", choices=STRATEGIES)
    parser.add_argument(
        "--min-margin",
        type=float,
        default=0.0,
        help="skip candidate pairs whose score difference is below this (counted)",
    )
    parser.add_argument(
        "--prompt-format",
        default="text",
        choices=PROMPT_FORMATS,
        help="text: plain strings; conversational: lists of chat messages",
    )
    parser.set_defaults(func=export_pairs_main)
    export_model.make_parser(subparsers)  # export-model: a folder transformers loads
    return parser
