"""``bayespref evaluate-generator``: compare a calibrated generator with its base.

Options are a :class:`~bayespref.generator_eval.GeneratorEvalConfig`: a YAML file
(``--config``, e.g. ``configs/evaluate-generator.yaml``) plus ``key=value`` overrides, like
every other command. The most used options also have flags (:data:`SHORTCUTS`); a flag is the
override of its key, applied after the file and before the ``key=value`` overrides, so

    bayespref evaluate-generator --base smollm2-135m-instruct --calibrated runs/cal \\
        --contexts synthetic:200:4 --judge oracle decoding.seed=1

reads as ``base=... calibrated=... contexts=... judge=oracle decoding.seed=1``. The flags of
earlier versions that are no longer shortcuts (:data:`REMOVED_FLAGS`) stop with an error that
names the override to use instead.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..config import ConfigError, load_yaml
from ..generator_eval import GeneratorEvalConfig, evaluate_from_config
from ..generator_report import format_markdown, write_report
from ..lm import PACKAGED_GENERATORS

SHORTCUTS: dict[str, str] = {
    "--base": "base",
    "--calibrated": "calibrated",
    "--contexts": "contexts",
    "--judge": "judge",
    "--rule": "rule",
    "--output": "output",
    "--decoding": "decoding.method",
    "--max-new-tokens": "decoding.max_new_tokens",
    "--limit": "limit",
}
"""Flag -> the config key it overrides."""

REMOVED_FLAGS: dict[str, str] = {
    "--min-new-tokens": "decoding.min_new_tokens=N",
    "--batch-size": "decoding.batch_size=N",
    "--seed": "decoding.seed=N",
    "--num-beams": "decoding.num_beams=K",
    "--num-beam-groups": "decoding.num_beam_groups=G",
    "--diversity-penalty": "decoding.diversity_penalty=X",
    "--length-penalty": "decoding.length_penalty=X",
    "--examples": "num_examples=N",
    "--no-chat-template": "chat_template=false",
}
"""Flags of earlier versions -> the override that replaces them."""


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate-generator`` on ``subparsers``."""
    description = "Compare a calibrated generator with its base: judged utility, win rate, ..."
    parser = subparsers.add_parser(
        "evaluate-generator",
        help=description,
        description=description,
        epilog="A flag overrides the config file; key=value overrides (after the flags) override "
        "both. Former flags: " + ", ".join(f"{f} -> {k}" for f, k in REMOVED_FLAGS.items()),
    )
    parser.add_argument("--config", help="YAML config (e.g. configs/evaluate-generator.yaml)")
    shortcut_help = {
        "--base": f"base generator: folder, Hub name or {', '.join(PACKAGED_GENERATORS)}",
        "--calibrated": "calibration run directory (generator/ inside) or model",
        "--contexts": "JSONL {id, context, gold}, synthetic:N:SEED or convabuse:CSV",
        "--judge": "'oracle' or a preference-model run dir",
        "--output": "folder for eval.json and eval.md (default: <calibrated run>/eval)",
        "--limit": "evaluate on the first N contexts only",
        "--rule": "a preference-model judge's rule",
        "--decoding": "how both generators answer",
        "--max-new-tokens": "longest answer, in tokens",
    }
    choices = {
        "--rule": ["expected-utility", "worst-class"],
        "--decoding": ["greedy", "diverse-beam"],
    }
    for flag, key in SHORTCUTS.items():
        parser.add_argument(
            flag,
            dest=_dest(flag),
            type=int if flag in ("--max-new-tokens", "--limit") else str,
            choices=choices.get(flag),
            help=f"{shortcut_help[flag]} (= {key}=...)",
        )
    for flag in REMOVED_FLAGS:  # parsed only to name the override that replaces them
        parser.add_argument(
            flag,
            dest=f"removed_{_dest(flag)}",
            action="store_true" if flag == "--no-chat-template" else "store",
            help=argparse.SUPPRESS,
        )
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides, e.g. decoding.method=diverse-beam"
    )
    parser.set_defaults(func=main)
    return parser


def shortcut_overrides(args: argparse.Namespace) -> list[str]:
    """The ``key=value`` overrides of the flags given (string values quoted, so that YAML keeps
    a path such as ``2024-01-01`` a string)."""
    for flag, replacement in REMOVED_FLAGS.items():
        if getattr(args, f"removed_{_dest(flag)}", None) not in (None, False):
            raise ConfigError(f"{flag} is no longer a flag: use the override {replacement}")
    overrides = []
    for flag, key in SHORTCUTS.items():
        value = getattr(args, _dest(flag))
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return overrides


def main(args: argparse.Namespace) -> int:
    """Handler of ``bayespref evaluate-generator``: evaluate, write the report, print it."""
    overrides = shortcut_overrides(args) + list(args.overrides)
    config = load_yaml(GeneratorEvalConfig, args.config, overrides)
    report = evaluate_from_config(config)
    json_path, md_path = write_report(report, config.report_dir)
    print(format_markdown(report))
    print(f"written: {json_path}\n         {md_path}")
    return 0
