"""``bayespref rank-eval``: how a preference or reward model ranks held-out candidate sets
against their true utilities (:mod:`bayespref.rank_eval`); prints the metrics and their counts."""

from __future__ import annotations

import argparse

from ..rank_eval import rank_eval
from ..ranking_metrics import BEST_OF_K, ranking_metric_registry


def metrics_table(metrics: dict[str, float], ks: tuple[int, ...]) -> str:
    """One line per metric, its direction beside the name (↑ higher is better, (ref) a
    reference value)."""
    registry = ranking_metric_registry(ks)
    lines = []
    for name, value in metrics.items():
        direction = registry[name].higher_is_better
        label = f"{name} {'↑' if direction else '↓'}" if direction is not None else f"{name} (ref)"
        lines.append(f"  {label:<26} {value:8.4f}")
    return "\n".join(lines)


def rank_eval_main(args: argparse.Namespace) -> int:
    ks = tuple(args.k)
    report = rank_eval(
        args.run,
        args.data,
        checkpoint=args.checkpoint,
        rule=args.rule,
        batch_size=args.batch_size,
        source=args.source,
        ks=ks,
        out=args.out,
    )
    counts = report["counts"]
    print(
        f"{report['model']} on {report['data']}"
        + (f" (source {args.source})" if args.source else "")
        + f": {counts['candidates']} candidates in {counts['groups']} groups, "
        f"{counts['ranked_groups']} ranked ({counts['single_candidate_groups']} with one "
        f"candidate, {counts['constant_utility_groups']} of constant utility left out), "
        f"{counts['pairs']} pairs ({counts['score_tied_pairs']} tied by the model)"
    )
    print(metrics_table(report["metrics"], ks))
    short = {
        k: counts[f"groups_shorter_than_{k}"] for k in ks if counts[f"groups_shorter_than_{k}"]
    }
    if short:
        print(
            "best-of-K uses every candidate of a shorter group: "
            + ", ".join(f"{n} groups have fewer than {k}" for k, n in short.items())
        )
    if args.out:
        print(f"report: {args.out}")
    return 0


def make_parser(subparsers) -> None:
    """Register ``rank-eval`` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "rank-eval",
        help="ranking of held-out candidate sets by a PM or reward model vs the true utilities",
    )
    p.add_argument("--run", required=True, help="preference-model or reward-model run (or folder)")
    p.add_argument(
        "--data", required=True, help="native JSONL with group and true_distribution per row"
    )
    p.add_argument("--out", help="write the report here as JSON")
    p.add_argument("--checkpoint", default="best", help="best | last | a checkpoint folder")
    p.add_argument(
        "--rule", default="expected-utility", choices=("expected-utility", "worst-class")
    )
    p.add_argument("--batch-size", type=int, default=64, help="pairs per model forward")
    p.add_argument("--source", choices=("beam", "sample"), help="only the rows of this source")
    p.add_argument("--k", type=int, nargs="+", default=list(BEST_OF_K), help="the K of best-of-K")
    p.set_defaults(func=rank_eval_main)
