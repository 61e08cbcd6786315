"""Generator calibration commands: ``generate`` (ranked candidates) and ``calibrate``.

Each reads a calibration config (:class:`~bayespref.calibration.CalibrationConfig`: a YAML file
plus ``key=value`` overrides), runs the library and prints what it made.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..calibration import CalibrationConfig, build_candidates, calibrate, read_candidates
from ..config import load_yaml


def generate_main(args: argparse.Namespace) -> int:
    """``bayespref generate``: build (or complete) the candidate cache."""
    config = load_yaml(CalibrationConfig, args.config, list(args.overrides))
    print(candidates_summary(build_candidates(config)))
    return 0


def candidates_summary(path: Path) -> str:
    """One line on a candidate file. The library logs only progress (reusing, resuming), so
    the command's line is the one summary."""
    meta, _ = read_candidates(path)
    contexts, unique, generated = (
        meta.get(key, "?") for key in ("num_contexts", "num_unique", "num_generated")
    )
    return f"candidates: {contexts} contexts, {unique} unique of {generated} generated -> {path}"


def calibrate_main(args: argparse.Namespace) -> int:
    """``bayespref calibrate``: candidates (cached), then the calibration run."""
    config = load_yaml(CalibrationConfig, args.config, list(args.overrides))
    result = calibrate(config, resume=args.resume)
    print(candidates_summary(result.candidates))
    if result.initial_eval_gold_nll is not None:
        print(f"held-out gold NLL before: {result.initial_eval_gold_nll:.4f}")
    if result.eval_gold_nll is not None:
        print(f"held-out gold NLL after:  {result.eval_gold_nll:.4f}")
    print(f"calibrated generator: {result.generator_dir}")
    return 0


def make_parser(subparsers) -> None:
    """Register ``generate`` and ``calibrate`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "generate", help="diverse beam search candidates, scored by a preference model -> JSONL"
    )
    p.add_argument("--config", help="YAML config (e.g. configs/calibrate-synthetic.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. decoding.num_beams=8")
    p.set_defaults(func=generate_main)

    p = subparsers.add_parser(
        "calibrate", help="calibrate a generator on ranked candidates -> runs/<name>/generator/"
    )
    p.add_argument("--config", help="YAML config (e.g. configs/calibrate-synthetic.yaml)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. loss.margin=0.01")
    p.set_defaults(func=calibrate_main)
