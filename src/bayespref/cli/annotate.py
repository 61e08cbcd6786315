"""``bayespref annotate-synthetic``: the synthetic annotators label the generator's candidates
(:mod:`bayespref.annotate_synthetic`); the command prints what it wrote and how to train on it."""

from __future__ import annotations

import argparse

from ..annotate_synthetic import AnnotateSyntheticConfig, annotate_synthetic
from ..config import load_yaml
from ..studies.common import git_commit


def annotate_synthetic_main(args: argparse.Namespace) -> int:
    config = load_yaml(AnnotateSyntheticConfig, args.config, list(args.overrides))
    result = annotate_synthetic(config, commit=git_commit())
    counts = result.counts
    generated = ", ".join(f"{n} {s}s" for s, n in counts["candidates_generated"].items())
    print(f"generated {generated}; {counts['blank_candidates_dropped']} blank ones dropped")
    for split, path in result.files.items():
        c = counts[split]
        print(
            f"{split}: {c['contexts']} contexts, {c['rows']} candidates, {c['labels']} labels -> {path}"
        )
    if "train" in result.files:
        valid = (
            f"data.valid={result.files['valid']}" if "valid" in result.files else "data.valid=null"
        )
        print(
            "train a preference model on it: bayespref train --config configs/synthetic.yaml "
            f"data.format=native data.train={result.files['train']} {valid}"
        )
    return 0


def make_parser(subparsers) -> None:
    """Register ``annotate-synthetic`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "annotate-synthetic",
        help="the synthetic annotators label the generator's own candidates -> native JSONL",
    )
    p.add_argument("--config", help="YAML config (e.g. configs/annotate-synthetic.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. contexts.n=40")
    p.set_defaults(func=annotate_synthetic_main)
