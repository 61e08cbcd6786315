"""``bayespref dpo``: the DPO peer of calibration (TRL's ``DPOTrainer`` on preference pairs).

Reads a :class:`~bayespref.dpo.DPOConfig` (a YAML file plus ``key=value`` overrides), trains
and prints where the generator went.
"""

from __future__ import annotations

import argparse

from ..config import load_yaml
from ..dpo import DPOConfig, train_dpo


def dpo_main(args: argparse.Namespace) -> int:
    """Handler of ``bayespref dpo``."""
    config = load_yaml(DPOConfig, args.config, list(args.overrides))
    result = train_dpo(config, resume=args.resume)
    shown = ("loss", "rewards/margins", "rewards/accuracies")
    last = ", ".join(f"{k} {result.final[k]:.4f}" for k in shown if k in result.final)
    print(f"dpo: {result.steps} steps on {result.train_pairs} pairs" + (f"; last step: {last}"
          if last else ""))  # fmt: skip
    print(f"generator: {result.generator_dir}")
    return 0


def make_parser(subparsers) -> None:
    """Register ``dpo`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "dpo", help="DPO (trl.DPOTrainer) on export-pairs output -> runs/<name>/generator/"
    )
    p.add_argument("--config", help="YAML config (e.g. configs/dpo-synthetic.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. dpo.beta=0.05")
    p.set_defaults(func=dpo_main)
