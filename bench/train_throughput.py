"""Training-step throughput of `bayespref train` against a bare training step of the same model.

    .venv/bin/python bench/train_throughput.py [--steps 20] [--bf16] [key=value ...]

Both sides run the same encoder + head on the same random micro-batches (the ones
`bayespref train` draws). The bare step is the least a training loop can do: one padded
forward, cross-entropy, backward, AdamW step. Ours is `bayespref.train.train` itself (accelerate,
the d-PM loss, gradient clipping, the learning-rate schedule, metrics logging), timed per step
from its own metrics.jsonl, first with one padded forward per batch (`optim.max_padding_waste=null`:
the loop's overhead alone) and then with the default length-sorted chunks. Throughput is real
(non-padding) tokens per second; the ratio is ours / bare (target >= 0.95). The bare loop runs
before and after ours and its two timings are averaged, to cancel drift on a busy machine.
Data: ConvAbuse (configs/convabuse.yaml) when ../shared/data is there, else synthetic.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
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


def bare_steps(model, split, batches, dev, bf16: bool) -> list[float]:
    """Seconds per step of forward + cross-entropy + backward + AdamW on padded batches."""
    import time

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    seconds = []
    for indices in batches:
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
        seconds.append(time.perf_counter() - start)
    return seconds


def our_steps(config, warmup: int, out_dir: Path) -> list[float]:
    train(config)
    rows = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    return [r["step_seconds"] for r in rows if r["split"] == "train"][warmup:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="training config (default: ConvAbuse, else synthetic)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps per side")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (losses in float32)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()

    dev = device(args.device)
    default = REPO / "configs" / "convabuse.yaml"
    if args.config is None and not (SHARED_DATA / "convabuse").is_dir():
        default = REPO / "configs" / "synthetic.yaml"
    overrides = [
        "data.valid=null",  # a small held-out part: the final evaluation is not timed anyway
        "data.valid_fraction=0.02",
        f"optim.max_steps={args.warmup + args.steps}",
        "eval_every=1000000",
        "progress=false",
        *(["mixed_precision=bf16"] if args.bf16 else []),
        *args.overrides,
    ]
    config = load_config(args.config or default, overrides)
    train_set, _ = load_train_valid(config.data, config.seed)
    torch.manual_seed(config.seed)
    model = PreferenceModel.build(config.model, train_set.label_space).to(dev)
    split = encode_split(model, train_set, config.data.alpha)
    n = args.warmup + args.steps
    batches = [
        micro_batch_indices(i, len(split), config.optim.batch_size, 1, 0, config.seed)
        for i in range(n)
    ]
    real_tokens = [int(split.batch(b)["attention_mask"].sum()) for b in batches][args.warmup :]
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def bare() -> list[float]:
        model.load_state_dict(initial)
        return bare_steps(model, split, batches, dev, args.bf16)[args.warmup :]

    with tempfile.TemporaryDirectory() as tmp:
        reset_peak(dev)
        bare_before = bare()
        bare_memory = peak_memory_mib(dev)
        del model
        ours = {}
        for label, waste in (("one padded pass", "null"), ("default chunks", None)):
            extra = [f"output_dir={tmp}", f"name={len(ours)}"]
            if waste is not None:
                extra.append(f"optim.max_padding_waste={waste}")
            run_config = load_config(args.config or default, overrides + extra)
            reset_peak(dev)
            ours[label] = our_steps(run_config, args.warmup, Path(tmp))
            ours[label + " memory"] = peak_memory_mib(dev)
        torch.manual_seed(config.seed)
        model = PreferenceModel.build(config.model, train_set.label_space).to(dev)
        bare_after = bare()

    tokens = sum(real_tokens)
    bare_seconds = (sum(bare_before) + sum(bare_after)) / 2
    figures = {
        "data": f"{config.name}, batch {config.optim.batch_size}, max_length {config.model.max_length}",
        "encoder": config.model.encoder,
        "precision": "bf16 autocast" if args.bf16 else "float32",
        "timed steps": args.steps,
        "bare tokens/s": tokens / bare_seconds,
        "bare before/after (s)": f"{sum(bare_before):.2f} / {sum(bare_after):.2f}",
    }
    for label in ("one padded pass", "default chunks"):
        seconds = sum(ours[label])
        figures[f"ours, {label}: tokens/s"] = tokens / seconds
        figures[f"ours, {label}: ratio to bare"] = bare_seconds / seconds
        figures[f"ours, {label}: median step s"] = statistics.median(ours[label])
    unit = "GPU MiB" if dev.type == "cuda" else "process RSS MiB (whole run)"
    peak = peak_flops(dev, args.bf16)
    if peak:  # 6 x parameters x real tokens (forward + backward), attention left out
        seconds = sum(ours["default chunks"])
        figures["model FLOP utilisation, ours default"] = 6 * params * tokens / seconds / peak
    figures[f"peak memory, bare ({unit})"] = bare_memory
    figures[f"peak memory, ours default ({unit})"] = ours["default chunks memory"]
    figures["target"] = "ratio >= 0.95"
    report("training-step throughput, ours / bare", figures, args.json)


if __name__ == "__main__":
    main()
