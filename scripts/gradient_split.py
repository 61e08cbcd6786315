"""Where the calibration gradient goes: the MLE and ranking terms' gradients, apart.

For each generator of a calibration study (the base and the calibrated ones), on the first N
training contexts of one preference model's ranked candidates, the gradient of
``w_mle * NLL(gold)`` and of ``w_rank * L_rank`` (bayespref.calibration.term_gradients) with
respect to the attention projections (q/k/v/o: the study's LoRA targets, here the merged full
weights), with the loss settings of that PM's calibration run:

    .venv/bin/python scripts/gradient_split.py --task-dir runs/calibration-study/synthetic \
        --pm soft --generators base soft mle-only soft+epochs3 mle-only+epochs3 \
        --out docs/results/calibration/gradients.json

Reading it: ``grad_norm_rank / grad_norm_mle`` says how much of the step the ranking term can
move at all; ``grad_cos_rank_mle`` whether it points where the MLE term already goes (near 1:
the ranking adds little direction of its own) or elsewhere. A generator whose ranking loss is
already satisfied (every pair ordered by the margin) has a ranking gradient of zero.
Takes ~4 min per generator with 64 contexts on the 2-core CPU beside two other jobs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

import torch

from bayespref.calibration import CalibrationConfig, encode_example, read_candidates, term_gradients
from bayespref.config import load_yaml
from bayespref.lm import load_generator

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task-dir", type=Path, required=True, help="<study>/<task> folder")
    parser.add_argument("--pm", default="soft", help="whose ranked candidates and loss settings")
    parser.add_argument("--generators", nargs="+", required=True, help="base or calibrated/<name>")
    parser.add_argument("--contexts", type=int, default=32, help="first N training contexts")
    parser.add_argument(
        "--mle-target", default=None, help="reference | top-candidate (default: the PM run's)"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)

    pm_run = args.task_dir / "calibrated" / args.pm
    config = load_yaml(CalibrationConfig, pm_run / "config.yaml")
    loss = config.loss
    if args.mle_target:
        loss = dataclasses.replace(loss, mle_target=args.mle_target)
    _, rows = read_candidates(config.candidates_path)
    rows = rows[: args.contexts]
    results = {
        "pm": args.pm,
        "candidates": str(config.candidates_path),
        "contexts": len(rows),
        "loss": dataclasses.asdict(loss),
        "parameters": "merged q/k/v/o projection weights of every layer",
        "generators": {},
    }
    for name in args.generators:
        spec = config.generator
        if name != "base":
            spec = dataclasses.replace(
                spec, name=str(args.task_dir / "calibrated" / name), gguf_file=None
            )
        generator = load_generator(spec)
        model = generator.model
        params = []
        for param_name, param in model.named_parameters():
            wanted = any(t in param_name for t in LORA_TARGETS)
            param.requires_grad_(wanted)
            if wanted:
                params.append(param)
        examples = [encode_example(generator, row, loss.mle_target) for row in rows]
        split = term_gradients(model, examples, loss, params, generator.pad_token_id)
        split["rank_to_mle"] = split["grad_norm_rank"] / split["grad_norm_mle"]
        results["generators"][name] = split
        print(
            f"{name:20s} |g_mle| {split['grad_norm_mle']:.4g}  |g_rank| "
            f"{split['grad_norm_rank']:.4g}  ratio {split['rank_to_mle']:.3f}  "
            f"cos {split['grad_cos_rank_mle']:+.3f}",
            flush=True,
        )
        if args.out:  # after every generator: an interrupted run keeps what it measured
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
