"""``bayespref export-model``: a trained run as a folder transformers and TRL load directly."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..model import PreferenceModel, find_model_dir
from ..reward_model import REWARD_META, RewardModel


def export_model_main(args: argparse.Namespace) -> int:
    """Handler of ``bayespref export-model``: a reward-model run (``train-pairwise``) exports
    with one label, the reward; a preference-model run with its classes."""
    model: PreferenceModel | RewardModel
    try:
        find_model_dir(Path(args.run), args.checkpoint, meta=REWARD_META)
    except FileNotFoundError:
        model = PreferenceModel.from_run(args.run, checkpoint=args.checkpoint)
    else:
        model = RewardModel.from_run(args.run, checkpoint=args.checkpoint)
    folder = model.save_pretrained(args.out)
    print(
        f"written: {folder}\n"
        "load it with AutoModelForSequenceClassification.from_pretrained("
        f"{str(folder)!r}, trust_remote_code=True) (docs/export.md)"
    )
    return 0


def make_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``export-model`` on an argparse subparsers object."""
    description = (
        "Write a trained model as a Hugging Face folder (config.json with id2label and the "
        "class utilities, model.safetensors, tokenizer, modeling_bayespref.py) that "
        "AutoModelForSequenceClassification loads with trust_remote_code=True, without bayespref."
    )
    parser = subparsers.add_parser("export-model", help=description, description=description)
    parser.add_argument("--run", required=True, help="run directory (or a model folder)")
    parser.add_argument("--out", required=True, help="folder written (must be new or empty)")
    parser.add_argument(
        "--checkpoint", default="best", help="best (default), last, or a step-N folder name"
    )
    parser.set_defaults(func=export_model_main)
    return parser
