"""Reward-model commands: ``train-pairwise``."""

from __future__ import annotations

import argparse
from typing import Any

from ..config.pairwise import load_pairwise_config
from ..train_pairwise import train_pairwise
from .tables import format_table


def cmd_train_pairwise(args: argparse.Namespace) -> int:
    """Handler of ``bayespref train-pairwise``."""
    config = load_pairwise_config(args.config, list(args.overrides))
    result = train_pairwise(config, resume=args.resume)
    if result.best_metrics:
        print(f"\nvalidation metrics of the best checkpoint (by {config.select_metric}):")
        columns = {f"{config.loss.name}": result.best_metrics}
        if result.baseline_metrics:
            columns["train vote share"] = result.baseline_metrics
        print(format_table(columns))
    print(
        f"\nrun directory: {result.run_dir}\n"
        f"export it for transformers: bayespref export-model --run {result.run_dir} --out DIR"
    )
    return 0


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train-pairwise`` on an argparse subparsers object."""
    description = (
        "Train a reward model r(context, response) on pairs with several votes each "
        "(soft, majority, margin BT or the d-PM losses on the pair outcomes A, B, tie)."
    )
    parser = subparsers.add_parser("train-pairwise", help=description, description=description)
    parser.add_argument("--config", help="YAML config (configs/pairwise-synthetic.yaml)")
    parser.add_argument("--resume", action="store_true", help="continue the run in its folder")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (loss.name=majority)")
    parser.set_defaults(func=cmd_train_pairwise)
    return parser
