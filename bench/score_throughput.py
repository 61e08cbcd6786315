"""Scoring throughput of `bayespref score` against a bare no-grad forward of the same model.

    .venv/bin/python bench/score_throughput.py [--items 512] [--batch-size 64] [--bf16] [--tiny]

Ours is `PreferenceModel.score` on (context, response) texts: tokenisation, longest-first
batching, forward, softmax, expected utility. The bare side gets the same items already
tokenised and forwards them in input order with one padded pass per batch (what a plain
inference loop does) and keeps the logits. Throughput is real tokens per second; the ratio is
ours / bare (target >= 0.95). The bare pass runs before and after ours, averaged. A third bare
pass over the same items longest first (the batches ours forms) isolates our overhead
(tokenisation, softmax, scores).
Data: the ConvAbuse valid CSV when ../shared/data is there, else synthetic pairs.
`--tiny`: a random 2-layer encoder on 16 synthetic pairs, seconds on a CPU (checks the script,
measures nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _tiny import tiny_encoder
from _util import REPO, SHARED_DATA, device, peak_memory_mib, report, reset_peak, synchronize

sys.path.insert(0, str(REPO / "src"))

from bayespref.config import ModelConfig  # noqa: E402
from bayespref.data import load_dataset  # noqa: E402
from bayespref.model import PreferenceModel, collate_encoded, encode_pair  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="all-MiniLM-L6-v2")
    parser.add_argument("--items", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="tiny random encoder: a smoke run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            args.encoder = tiny_encoder(Path(tmp) / "tiny-encoder")
            args.items, args.batch_size, args.max_length = 16, 8, 32
        measure(args)


def measure(args) -> None:
    dev = device(args.device)
    csv = SHARED_DATA / "convabuse" / "ConvAbuseEMNLPvalid.csv"
    dataset = (
        load_dataset("convabuse", str(csv))
        if csv.is_file() and not args.tiny
        else load_dataset("synthetic", None, n=args.items, seed=0)
    )
    examples = dataset.examples[: args.items]
    contexts = [ex.context for ex in examples]
    responses = [ex.response for ex in examples]
    config = ModelConfig(encoder=args.encoder, max_length=args.max_length)
    model = PreferenceModel.build(config, dataset.label_space).to(dev).eval()
    if args.bf16:
        model = model.to(torch.bfloat16)
    items = [
        encode_pair(model.tokenizer, c, r, args.max_length) for c, r in zip(contexts, responses)
    ]
    pad = model.tokenizer.pad_token_id or 0
    tokens = sum(len(it["input_ids"]) for it in items)

    @torch.no_grad()
    def bare(order=None) -> float:
        ordered = items if order is None else [items[i] for i in order]
        synchronize(dev)
        start = time.perf_counter()
        out = []
        for s in range(0, len(ordered), args.batch_size):
            batch = collate_encoded(ordered[s : s + args.batch_size], pad)
            out.append(model(**{k: v.to(dev) for k, v in batch.items()}).float().cpu())
        synchronize(dev)
        return time.perf_counter() - start

    def ours() -> float:
        synchronize(dev)
        start = time.perf_counter()
        scores = model.score(contexts, responses, batch_size=args.batch_size)
        synchronize(dev)
        assert np.isfinite(scores).all() and len(scores) == len(items)
        return time.perf_counter() - start

    bare()  # warm-up (allocator, kernels)
    reset_peak(dev)
    before = bare()
    bare_memory = peak_memory_mib(dev)
    reset_peak(dev)
    our_seconds = ours()
    our_memory = peak_memory_mib(dev)
    after = bare()
    bare_seconds = (before + after) / 2
    # the loop's own overhead: the same forward passes as ours, pre-tokenised, longest first
    by_length = sorted(range(len(items)), key=lambda i: -len(items[i]["input_ids"]))
    sorted_seconds = bare(by_length)
    report(
        "scoring throughput, ours / bare",
        {
            "data": f"{dataset.name}: {len(items)} pairs, max_length {args.max_length}",
            "encoder": "tiny random encoder (--tiny: measures nothing)"
            if args.tiny
            else args.encoder,
            "batch size": args.batch_size,
            "precision": "bf16" if args.bf16 else "float32",
            "bare tokens/s": tokens / bare_seconds,
            "bare before/after (s)": f"{before:.2f} / {after:.2f}",
            "ours tokens/s (incl. tokenisation)": tokens / our_seconds,
            "ratio ours / bare": bare_seconds / our_seconds,
            "bare, longest first (s)": sorted_seconds,
            "ratio ours / bare longest first (overhead)": sorted_seconds / our_seconds,
            "peak memory bare (MiB)": bare_memory,
            "peak memory ours (MiB)": our_memory,
            "target": "ratio >= 0.95",
        },
        args.json,
    )


if __name__ == "__main__":
    main()
