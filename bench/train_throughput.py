"""Training throughput of `bayespref train` against the length-sorted limit, in one run.

    .venv/bin/python bench/train_throughput.py [--steps 32] [--warmup 8] [--grad-accum 1 2 4 8]
                                               [--unpooled] [--bf16] [--tiny] [--json FILE]
                                               [key=value ...]

Two baselines, each a bare training step (one padded forward, cross-entropy, backward, AdamW
step: the least a training loop can do) of the same encoder + head:
- the length-sorted limit: the training items sorted by length and cut into batches of the
  micro-batch size, so almost no token is padding; the timed batches are spread evenly over
  that sorted epoch, so their lengths follow the data's. This is the machine's pace for the
  encoder. bayespref never trains on such batches: they would bias the d-PM batch normaliser.
- the same random batches: the micro-batches `bayespref train` draws, one padded pass each.

Ours is `bayespref.train.train` itself (accelerate, the d-PM loss, gradient clipping, the
learning-rate schedule, metrics logging), timed per optimiser step from its own metrics.jsonl:
- grad_accum 1 with one padded pass per batch (optim.max_padding_waste=null): the loop's own
  overhead against the same-batches bare step;
- grad_accum 1, the defaults: each random micro-batch forwarded in length-sorted chunks;
- grad_accum 2, 4, 8 (--grad-accum), pooled (optim.pool_micro_batches, the default): the
  step's random micro-batches forwarded together as one length-sorted pool, every loss still
  over its own random micro-batch; --unpooled adds each of them with pooling off.
`--steps` and `--warmup` count micro-batches, rounded up to whole optimiser steps, so when they
are multiples of every grad_accum all configurations time the same items (micro-batches
warmup .. warmup + steps - 1 of the training run, as the same-batches bare step does).
Tokens/s counts the real (non-padding) tokens of all the items of the timed optimiser steps.
Each configuration is printed with its ratio to the limit and to the same-batches bare step;
the recommendation is the smallest grad_accum reaching 0.85 of the limit. The bare steps run
before ours and again after, in reverse order, and each pair is averaged (cancels drift on a
busy machine). Torch runs with the machine's threads (printed; set OMP_NUM_THREADS to change).

Data: ConvAbuse (configs/convabuse.yaml) when ../shared/data is there, else synthetic.
`--tiny`: a random 2-layer encoder on 64 synthetic items; seconds on a CPU. It checks the
script end to end and measures nothing (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _tiny import tiny_encoder
from _util import (
    REPO,
    SHARED_DATA,
    device,
    peak_flops,
    peak_memory_mib,
    report,
    reset_peak,
    synchronize,
)

sys.path.insert(0, str(REPO / "src"))

from bayespref.config import load_config  # noqa: E402
from bayespref.data.splits import load_train_valid  # noqa: E402
from bayespref.evaluation import encode_split  # noqa: E402
from bayespref.model import PreferenceModel  # noqa: E402
from bayespref.train import train  # noqa: E402
from bayespref.trainer_utils import micro_batch_indices  # noqa: E402

TOKEN_INPUTS = ("input_ids", "attention_mask", "response_mask", "token_type_ids")
TARGET = 0.85  # of the length-sorted limit (issue 16)


def bare_seconds(model, split, warm, timed, dev, bf16: bool) -> float:
    """Seconds of forward + cross-entropy + backward + AdamW over the ``timed`` batches (index
    arrays), after untimed ``warm`` batches; a fresh optimiser."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    total = 0.0
    for number, indices in enumerate([*warm, *timed]):
        synchronize(dev)
        start = time.perf_counter()
        batch = split.batch(indices)
        inputs = {k: v.to(dev) for k, v in batch.items() if k in TOKEN_INPUTS}
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(**inputs)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch["labels"].to(dev))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss)  # the loop logs its loss: one host sync per step, as ours does
        synchronize(dev)
        if number >= len(warm):
            total += time.perf_counter() - start
    return total


def sorted_batches(lengths: np.ndarray, batch_size: int, count: int) -> list[np.ndarray]:
    """``count`` batches spread evenly over the epoch of length-sorted batches."""
    order = np.argsort(lengths, kind="stable")
    per_epoch = len(lengths) // batch_size
    positions = np.linspace(0, per_epoch - 1, count).round().astype(int)
    return [order[p * batch_size : (p + 1) * batch_size] for p in positions]


class Setting:
    """One `bayespref train` configuration and the micro-batches its timed steps cover:
    ``warmup`` and ``steps`` micro-batches, each rounded up to whole optimiser steps."""

    def __init__(
        self,
        label: str,
        grad_accum: int,
        overrides: list[str],
        steps: int,
        warmup: int,
        recommendable: bool = True,  # False: a reference run, not a way to train
    ) -> None:
        self.label, self.grad_accum, self.overrides = label, grad_accum, overrides
        self.recommendable = recommendable
        self.warmup_steps = max(1, math.ceil(warmup / grad_accum))
        self.timed_steps = math.ceil(steps / grad_accum)
        first = self.warmup_steps * grad_accum
        self.timed_micro = range(first, first + self.timed_steps * grad_accum)

    def run(self, config_path, base: list[str], out: str, name: str, dev) -> dict:
        total_steps = self.warmup_steps + self.timed_steps
        config = load_config(
            config_path,
            [*base, f"output_dir={out}", f"name={name}", f"optim.max_steps={total_steps}",
             f"optim.grad_accum={self.grad_accum}", *self.overrides],
        )  # fmt: skip
        reset_peak(dev)
        train(config)
        rows = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
        seconds = [r["step_seconds"] for r in rows if r["split"] == "train"]
        assert len(seconds) == total_steps, (self.label, len(seconds), total_steps)
        return {"seconds": seconds[self.warmup_steps :], "memory": peak_memory_mib(dev)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="training config (default: ConvAbuse, else synthetic)")
    parser.add_argument("--steps", type=int, default=32, help="timed micro-batches per side")
    parser.add_argument("--warmup", type=int, default=8, help="untimed first micro-batches")
    parser.add_argument(
        "--grad-accum", type=int, nargs="+", default=[2, 4, 8], metavar="G",
        help="pooled accumulation settings to time beside the defaults (grad_accum 1)",
    )  # fmt: skip
    parser.add_argument("--unpooled", action="store_true", help="also each G unpooled")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (losses in float32)")
    parser.add_argument("--tiny", action="store_true", help="tiny random encoder: a smoke run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or min(args.grad_accum) < 1:
        parser.error("--steps and --grad-accum must be >= 1, --warmup >= 0")

    with tempfile.TemporaryDirectory() as tmp:
        tiny = []
        if args.tiny:
            encoder = tiny_encoder(Path(tmp) / "tiny-encoder")
            tiny = [f"model.encoder={encoder}", "data.train={n: 64, seed: 1}",
                    "model.max_length=32", "optim.batch_size=8"]  # fmt: skip
        measure(args, tiny, tmp)


def measure(args, tiny: list[str], tmp: str) -> None:
    dev = device(args.device)
    config_path = args.config or REPO / "configs" / "convabuse.yaml"
    if args.tiny or (args.config is None and not (SHARED_DATA / "convabuse").is_dir()):
        config_path = args.config or REPO / "configs" / "synthetic.yaml"
    base = [
        "data.valid=null",  # a small held-out part: the final evaluation is not timed anyway
        "data.valid_fraction=0.02",
        "eval_every=1000000",
        "progress=false",
        *(["mixed_precision=bf16"] if args.bf16 else []),
        *tiny,
        *args.overrides,
    ]
    config = load_config(config_path, base)
    batch_size = config.optim.batch_size
    train_set, _ = load_train_valid(config.data, config.seed)
    torch.manual_seed(config.seed)
    model = PreferenceModel.build(config.model, train_set.label_space).to(dev)
    split = encode_split(model, train_set, config.data.alpha)
    lengths = np.array([len(item["input_ids"]) for item in split.items])  # real tokens

    def micro(index: int) -> np.ndarray:  # the training run's micro-batch `index`
        return micro_batch_indices(index, len(split), batch_size, 1, 0, config.seed)

    def real_tokens(batches) -> int:
        return int(sum(lengths[b].sum() for b in batches))

    warm = [micro(i) for i in range(args.warmup)]
    same = [micro(i) for i in range(args.warmup, args.warmup + args.steps)]
    limit = sorted_batches(lengths, batch_size, args.steps)
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def bare(batches) -> float:
        model.load_state_dict(initial)
        return bare_seconds(model, split, warm, batches, dev, args.bf16)

    counts = (args.steps, args.warmup)
    padded = ["optim.max_padding_waste=null"]  # the loop's own overhead: never recommended
    settings = [
        Setting("grad_accum 1, one padded pass", 1, padded, *counts, recommendable=False),
        Setting("grad_accum 1 (defaults)", 1, [], *counts),
    ]
    for g in sorted(set(args.grad_accum) - {1}):
        settings.append(
            Setting(f"grad_accum {g}, pooled", g, ["optim.pool_micro_batches=true"], *counts)
        )
        if args.unpooled:  # what pooling itself brings
            unpooled = ["optim.pool_micro_batches=false"]
            settings.append(
                Setting(f"grad_accum {g}, unpooled", g, unpooled, *counts, recommendable=False)
            )

    reset_peak(dev)
    limit_before, same_before = bare(limit), bare(same)
    bare_memory = peak_memory_mib(dev)
    del model
    results = {
        s.label: s.run(config_path, base, tmp, f"run-{i}", dev) for i, s in enumerate(settings)
    }
    torch.manual_seed(config.seed)
    model = PreferenceModel.build(config.model, train_set.label_space).to(dev)
    same_after, limit_after = bare(same), bare(limit)

    limit_rate = real_tokens(limit) / ((limit_before + limit_after) / 2)
    same_rate = real_tokens(same) / ((same_before + same_after) / 2)
    peak = peak_flops(dev, args.bf16)
    on_gpu = dev.type == "cuda"
    table = []
    for setting in settings:
        seconds = results[setting.label]["seconds"]
        tokens = real_tokens(micro(i) for i in setting.timed_micro)
        rate = tokens / sum(seconds)
        row = {
            "configuration": setting.label,
            "real tokens/s": rate,
            "/ limit": rate / limit_rate,
            "/ same-batches bare": rate / same_rate,
            "median step s": statistics.median(seconds),
            "items per step": batch_size * setting.grad_accum,
            "steps per epoch": max(1, len(split) // batch_size // setting.grad_accum),
            "timed steps": setting.timed_steps,
        }
        if peak:  # 6 x parameters x real tokens (forward + backward), attention left out
            row["model FLOP utilisation"] = 6 * params * tokens / sum(seconds) / peak
        if on_gpu:
            row["peak GPU MiB"] = results[setting.label]["memory"]
        table.append(row)

    figures = {
        "data": f"{config.name}: {len(split)} training items, batch {batch_size}, "
        f"max_length {config.model.max_length}"
        + (" (--tiny: measures nothing)" if args.tiny else ""),
        "encoder": config.model.encoder,
        "precision": "bf16 autocast" if args.bf16 else "float32",
        "torch threads": f"{torch.get_num_threads()} intra-op "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        "timed micro-batches per side": f"{args.steps} (after {args.warmup} untimed)",
        "limit: length-sorted bare tokens/s": limit_rate,
        "same-batches bare tokens/s": same_rate,
        "same-batches bare / limit": same_rate / limit_rate,
        "bare before/after (s)": f"limit {limit_before:.2f} / {limit_after:.2f}, "
        f"same batches {same_before:.2f} / {same_after:.2f}",
        f"peak memory, bare ({'GPU MiB' if on_gpu else 'process RSS MiB'})": bare_memory,
    }
    if not on_gpu:
        figures["peak memory, whole run (process RSS MiB)"] = peak_memory_mib(dev)
    figures["settings tried"] = f"{len(settings)}: " + "; ".join(s.label for s in settings)
    figures["recommended"] = recommendation(settings, table, len(split) // batch_size)
    figures["target"] = f"ours >= {TARGET} x the length-sorted limit"
    report("training throughput: `bayespref train` vs the length-sorted limit", figures,
           args.json, table)  # fmt: skip


def recommendation(settings: list[Setting], table: list[dict], steps_at_one: int) -> str:
    """The smallest grad_accum whose `bayespref train` reaches TARGET x the limit, and what it
    changes (optimiser steps per epoch)."""
    candidates = [(s, row) for s, row in zip(settings, table) if s.recommendable]
    reaching = [(s, row) for s, row in candidates if row["/ limit"] >= TARGET]
    if not reaching:
        s, row = max(candidates, key=lambda pair: pair[1]["/ limit"])
        return (
            f"none of the tried settings reached {TARGET} x the limit; the best was "
            f"{s.label} at {row['/ limit']:.2f}"
        )
    s, row = min(reaching, key=lambda pair: pair[0].grad_accum)
    if s.grad_accum == 1:
        return f"the defaults ({row['/ limit']:.2f} x the limit)"
    return (
        f"optim.grad_accum={s.grad_accum} ({row['/ limit']:.2f} x the limit): "
        f"{row['items per step']} items per optimiser step, so {row['steps per epoch']} "
        f"optimiser steps per epoch instead of {steps_at_one}"
    )


if __name__ == "__main__":
    main()
