"""Padding waste of the training batches on ConvAbuse: random vs chunked vs length-sorted.

    .venv/bin/python bench/padding_waste.py [--config configs/convabuse.yaml] [--epochs 1] [--tiny]

Padding waste = padded tokens / real tokens over one epoch of training micro-batches (the
micro-batches `bayespref train` draws: seeded random permutations, never sorted).
- `random`: each random micro-batch padded to its longest item (one forward pass);
- `chunked` (the default, optim.max_padding_waste): the same random batches, forwarded in
  length-sorted chunks; the loss still sees the whole random batch;
- `sorted`: batches cut from the length-sorted data (the usual cure, shown for reference: it
  biases the batch normaliser, so bayespref never trains that way).
Target: chunked <= 1.15. Only the tokenizer runs; no model. `--tiny`: 64 synthetic items
(checks the script in seconds, measures nothing).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _util import REPO, report

sys.path.insert(0, str(REPO / "src"))

from bayespref.batching import length_chunks  # noqa: E402
from bayespref.config import load_config  # noqa: E402
from bayespref.data.splits import load_train_valid  # noqa: E402
from bayespref.model import encode_pair, resolve_encoder_path  # noqa: E402
from bayespref.trainer_utils import micro_batch_indices  # noqa: E402


def waste(batches: list[np.ndarray], lengths: np.ndarray, limit: float | None) -> float:
    padded = real = 0
    for batch in batches:
        for chunk in length_chunks(lengths[batch], limit):
            padded += lengths[batch][chunk].max() * len(chunk)
            real += lengths[batch][chunk].sum()
    return float(padded / real)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "convabuse.yaml"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="64 synthetic items: a smoke run")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    tiny = []
    if args.tiny:
        args.config = str(REPO / "configs" / "synthetic.yaml")
        tiny = ["data.train={n: 64, seed: 1}", "data.valid=null", "optim.batch_size=8"]
    config = load_config(args.config, [*tiny, *args.overrides])
    train_set, _ = load_train_valid(config.data, config.seed)
    tokenizer = AutoTokenizer.from_pretrained(resolve_encoder_path(config.model.encoder))
    lengths = np.array(
        [
            len(
                encode_pair(tokenizer, ex.context, ex.response, config.model.max_length)[
                    "input_ids"
                ]
            )
            for ex in train_set.examples
        ]
    )
    batch = config.optim.batch_size
    per_epoch = len(lengths) // batch
    random_batches = [
        micro_batch_indices(i, len(lengths), batch, 1, 0, config.seed)
        for i in range(per_epoch * args.epochs)
    ]
    order = np.argsort(lengths, kind="stable")
    sorted_batches = [order[i * batch : (i + 1) * batch] for i in range(per_epoch)]
    limit = config.optim.max_padding_waste
    chunks_per_batch = np.mean([len(length_chunks(lengths[b], limit)) for b in random_batches])
    report(
        "padding waste (padded / real tokens), training batches",
        {
            "data": f"{config.name}: {len(lengths)} training items"
            + (" (--tiny: measures nothing)" if args.tiny else ""),
            "max_length": config.model.max_length,
            "batch_size": batch,
            "mean_tokens_per_item": float(lengths.mean()),
            "random (one padded pass)": waste(random_batches, lengths, None),
            f"chunked (default, limit {limit})": waste(random_batches, lengths, limit),
            "forward chunks per batch": float(chunks_per_batch),
            "length-sorted (biased, reference)": waste(sorted_batches, lengths, None),
            "target (chunked)": "<= 1.15",
        },
        args.json,
    )


if __name__ == "__main__":
    main()
