"""The pairwise study on synthetic pairs (issue 15): which loss recovers P*(A, B, tie) best?

    .venv/bin/python scripts/pairwise_study.py [--output runs/pairwise-study] [--seeds 0 1 2]

Every loss trains a reward model with configs/pairwise-synthetic.yaml (frozen MiniLM-L6,
Rao-Kupper ties) on the same 1,200 synthetic training pairs, once per seed (initialisation and
batch order). The validation split is replaced by 1,000 held-out pairs (seed 3) and the table
reports the metrics of the LAST step on them (no checkpoint is selected on these pairs).
Finished runs are reused. Writes <output>/report.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from bayespref.config.pairwise import load_pairwise_config  # noqa: E402
from bayespref.pairwise_metrics import PAIRWISE_METRICS  # noqa: E402
from bayespref.stats import t_interval  # noqa: E402
from bayespref.train_pairwise import train_pairwise  # noqa: E402

# (row, loss, extra overrides): every loss as is, and the d-PM forms with the target detached
ROWS = [
    (loss, loss, []) for loss in ("soft", "majority", "margin", "forward-kl", "reverse-kl", "jsd")
]
ROWS += [
    (f"{loss}+detached", loss, ["loss.detach_target=true"])
    for loss in ("forward-kl", "reverse-kl", "jsd")
]
TEST = "data.valid={n: 1000, seed: 3, min_annotators: 1, max_annotators: 5}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/pairwise-study")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    out = Path(args.output)
    results: dict[str, list[dict]] = {}
    for row, loss, extra in ROWS:
        for seed in args.seeds:
            overrides = [
                f"output_dir={out}",
                f"name={row}-seed{seed}",
                f"seed={seed}",
                f"loss.name={loss}",
                TEST,
                "progress=false",
                *extra,
            ]
            config = load_pairwise_config(REPO / "configs" / "pairwise-synthetic.yaml", overrides)
            summary_file = config.run_dir / "summary.json"
            if not summary_file.is_file():  # an interrupted run resumes
                train_pairwise(config, resume=(config.run_dir / "metrics.jsonl").is_file())
            results.setdefault(row, []).append(json.loads(summary_file.read_text())["final"])
    names = [m for m in PAIRWISE_METRICS if m in results["soft"][0]]
    lines = [
        "| loss | " + " | ".join(f"{m} {arrow(m)}" for m in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for row, finals in results.items():
        cells = []
        for m in names:
            mean, half = t_interval([f[m] for f in finals])
            cells.append(f"{mean:.4f} ± {half:.4f}" if not math.isnan(half) else f"{mean:.4f}")
        lines.append(f"| `{row}` | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    (out / "report.md").write_text(table + "\n", encoding="utf-8")
    print(table)


def arrow(name: str) -> str:
    better = PAIRWISE_METRICS[name].higher_is_better
    return "" if better is None else ("↑" if better else "↓")


if __name__ == "__main__":
    main()
