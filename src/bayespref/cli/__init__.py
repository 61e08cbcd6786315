"""The ``bayespref`` command line: the only place that prints.

Preference models: ``train``, ``evaluate``, ``score``, ``compare`` (the loss study).
Generators: ``generate`` (ranked candidates), ``calibrate``, ``evaluate-generator``,
``export-pairs`` (DPO pairs), ``calibration-study``.

Each subcommand is a thin layer over the Python API; configs are YAML files plus
``key=value`` overrides (``bayespref train --config configs/synthetic.yaml loss.name=jsd``).
Known failures (a user's mistake, a stop signal) print one line and exit with the code of
:func:`bayespref.cli.errors.exit_code`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from .. import __version__  # the package silences matplotlib's font-cache line on import
from . import (
    annotate,
    calibration,
    dpo,
    export,
    generator_eval,
    pairwise,
    preference,
    rank_eval,
    studies,
)
from .errors import exit_code  # noqa: E402


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayespref",
        description="Disagreement-aware preference models from multi-annotator labels.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"bayespref {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    preference.make_parser(sub)  # train, evaluate, score
    pairwise.make_parser(sub)  # train-pairwise (reward models)
    calibration.make_parser(sub)  # generate, calibrate
    dpo.make_parser(sub)  # dpo (TRL's DPOTrainer on export-pairs output)
    generator_eval.make_parser(sub)  # evaluate-generator
    export.make_parser(sub)  # export-pairs
    annotate.make_parser(sub)  # annotate-synthetic (the generator's candidates, labelled)
    rank_eval.make_parser(sub)  # rank-eval (a model's ranking of candidate sets vs the truth)
    studies.make_parser(sub)  # compare (loss study), calibration-study (base vs each loss)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except Exception as err:  # known failures: one clear line, no traceback
        code = exit_code(err)
        if code is None:
            raise
        prefix = f"bayespref {args.command}:" + ("" if code == 130 else " error:")
        print(f"{prefix} {err}", file=sys.stderr)
        return code
    finally:
        close_process_group()


def close_process_group() -> None:
    """Under torchrun/accelerate launch, leave the process group before the interpreter exits:
    a process that exits with it still open can abort in its communication threads' teardown
    ("terminate called without an active exception"), failing a command that had finished."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
