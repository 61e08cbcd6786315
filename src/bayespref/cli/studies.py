"""Study commands: ``compare`` (the loss study, or the pairwise study of a file with
``kind: pairwise``) and ``calibration-study``.

Both read a study YAML (``--config``; ``--quick`` for its quick section; ``--set key=value``
for study keys) and pass the positional ``key=value`` overrides to every preference model they
train. Rerunning a command skips finished steps and resumes interrupted ones; ``--report-only``
trains nothing and rewrites the report from what has finished.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from ..studies.calibration_study import run_calibration_study
from ..studies.calibration_study_config import load_calibration_study
from ..studies.loss_study import run_study
from ..studies.loss_study_config import load_study
from ..studies.pairwise_study import run_pairwise_study
from ..studies.pairwise_study_config import load_pairwise_study, study_kind


def _command_line() -> str:
    """The command as typed (quoted for a shell), recorded in the report."""
    return " ".join(shlex.quote(a) for a in ["bayespref", *sys.argv[1:]])


def cmd_compare(args: argparse.Namespace) -> int:
    """``bayespref compare``: the loss study, or the pairwise study (``kind: pairwise``)."""
    if study_kind(args.config) == "pairwise":
        return compare_pairwise(args)
    study = load_study(args.config, quick=args.quick, overrides=args.set)
    result = run_study(
        study,
        report_only=args.report_only,
        train_overrides=list(args.overrides),
        command=_command_line(),
    )
    print(f"cells: {result.outcome}")
    print(f"report: {result.report}")
    for plot in result.plots:
        print(f"plot:   {plot}")
    return 0


def compare_pairwise(args: argparse.Namespace) -> int:
    """``bayespref compare`` on a pairwise study: reward-model losses x seeds."""
    pairwise = load_pairwise_study(args.config, quick=args.quick, overrides=args.set)
    result = run_pairwise_study(
        pairwise,
        report_only=args.report_only,
        train_overrides=list(args.overrides),
        command=_command_line(),
    )
    print(f"cells: {result.outcome}")
    for line in result.conclusions:
        print(f"- {line}")
    print(f"report:  {result.report}")
    print(f"results: {result.results}")
    return 0


def cmd_calibration_study(args: argparse.Namespace) -> int:
    """``bayespref calibration-study``: base vs each loss's calibrated generator, end to end."""
    study = load_calibration_study(args.config, quick=args.quick, overrides=list(args.set))
    result = run_calibration_study(
        study,
        report_only=args.report_only,
        train_overrides=list(args.overrides),
        command=_command_line(),
    )
    for task, res in result.results.items():
        acc = res["acceptance"]
        verdict = "met" if acc["accepted"] else "not met"
        print(f"{task}: best loss {acc['best']}, acceptance {verdict}")
        ranking = res.get("ranking_acceptance") or {}
        if ranking.get("accepted") is not None:
            beats = "yes" if ranking["accepted"] else "no"
            print(f"{task}: a PM-ranked calibration beats mle-only beyond its interval: {beats}")
    print(f"report: {result.report}  ({result.outcome})")
    return 0


def _add_study_arguments(
    parser: argparse.ArgumentParser, example: str, quick: str, report_only: str, overrides: str
) -> None:
    """The options every study command takes (their help says what each study does)."""
    parser.add_argument("--config", required=True, help=f"study YAML (e.g. {example})")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--report-only", action="store_true", help=report_only)
    parser.add_argument(
        "--set", action="append", default=[], help="study key=value override (repeatable)"
    )
    parser.add_argument("overrides", nargs="*", help=overrides)


def make_parser(subparsers: Any) -> None:
    """Register ``compare`` and ``calibration-study`` on ``subparsers``."""
    p = subparsers.add_parser(
        "compare",
        help="loss study: losses x seeds x data sets, cached -> report.md + plots; or a "
        "pairwise study (kind: pairwise, e.g. configs/pairwise-study.yaml)",
    )
    _add_study_arguments(
        p,
        example="configs/study.yaml or configs/pairwise-study.yaml",
        quick="the study's quick section (minutes)",
        report_only="train nothing; report the finished cells",
        overrides="key=value overrides applied to every cell",
    )
    p.set_defaults(func=cmd_compare)

    description = (
        "End-to-end calibration study: a preference model per loss ranks shared candidates, "
        "a generator is calibrated per loss and judged against the base -> report.md"
    )
    p = subparsers.add_parser("calibration-study", help=description, description=description)
    _add_study_arguments(
        p,
        example="configs/calibration-study.yaml",
        quick="the study's quick section",
        report_only="train nothing; report finished steps",
        overrides="key=value overrides of every preference model",
    )
    p.set_defaults(func=cmd_calibration_study)
