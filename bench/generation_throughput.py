"""Diverse beam search throughput (new tokens per second) and model FLOP utilisation.

    .venv/bin/python bench/generation_throughput.py [--contexts 32] [--beams 4] [--bf16]
                                                    [--model PATH] [--tiny]

Runs `bayespref.generation.generate_candidates` (our diverse beam search, KV cache, batched over
contexts) on synthetic contexts with the chat template, and reports generated tokens per second
(every beam's new tokens) and, on a GPU with a known peak, model FLOP utilisation (2 x parameters
x processed tokens / s over the peak; attention FLOPs left out). Model: the packaged
SmolLM2-135M-Instruct, or `--model` any causal LM folder or name; `--tiny`: a random 2-layer
Llama with a byte-level chat tokenizer, seconds on a CPU (checks the script, measures nothing).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from _tiny import tiny_generator
from _util import REPO, device, peak_flops, peak_memory_mib, report, reset_peak, synchronize

sys.path.insert(0, str(REPO / "src"))

from bayespref.beam_search import beam_config  # noqa: E402
from bayespref.config import DecodingConfig  # noqa: E402
from bayespref.data.synthetic import make_synthetic_contexts  # noqa: E402
from bayespref.generation import generate_candidates  # noqa: E402
from bayespref.lm import load_generator  # noqa: E402


def load(model_name: str | None, bf16: bool, dev):
    generator = load_generator(model_name or "smollm2-135m-instruct")
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = generator.model.to(dev, dtype).eval()
    return model, generator.tokenizer, model_name or "SmolLM2-135M-Instruct (packaged GGUF)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contexts", type=int, default=32)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16, help="contexts per search")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--model", help="causal LM folder or name (default: packaged SmolLM2)")
    parser.add_argument("--tiny", action="store_true", help="tiny random model: a smoke run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_name = tiny_generator(Path(tmp) / "tiny-llama") if args.tiny else args.model
        measure(args, model_name)


def measure(args, model_name: str | None) -> None:
    dev = device(args.device)
    model, tokenizer, described = load(model_name, args.bf16, dev)
    if args.tiny:
        described = "tiny random Llama, 2 layers (--tiny: measures nothing)"
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    decoding = DecodingConfig(
        method="diverse-beam",
        num_beams=args.beams,
        num_beam_groups=args.beams,
        diversity_penalty=4.0,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.max_new_tokens,
    )  # min = max: every beam generates the same number of tokens, so the count is exact
    config = beam_config(decoding, eos_token_id=eos, pad_token_id=eos)
    contexts = [row["context"][0] for row in make_synthetic_contexts(args.contexts, seed=0)]
    generate_candidates(
        model, tokenizer, contexts[: args.batch_size], config, batch_size=args.batch_size
    )
    reset_peak(dev)
    synchronize(dev)
    start = time.perf_counter()
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16):
        generate_candidates(model, tokenizer, contexts, config, batch_size=args.batch_size)
    synchronize(dev)
    seconds = time.perf_counter() - start
    new_tokens = args.contexts * args.beams * args.max_new_tokens
    prompt_tokens = sum(
        len(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": c}], add_generation_prompt=True, tokenize=True
            )
        )
        for c in contexts
    )
    params = sum(p.numel() for p in model.parameters())
    flops = 2 * params * (new_tokens + prompt_tokens)
    peak = peak_flops(dev, args.bf16)
    report(
        "diverse beam search throughput",
        {
            "model": described,
            "parameters (M)": params / 1e6,
            "precision": "bf16" if args.bf16 else "float32",
            "contexts x beams x new tokens": f"{args.contexts} x {args.beams} x {args.max_new_tokens}",
            "seconds": seconds,
            "generated tokens/s": new_tokens / seconds,
            "model FLOP utilisation": (flops / seconds / peak) if peak else "n/a (unknown peak)",
            "peak memory (MiB)": peak_memory_mib(dev),
        },
        args.json,
    )


if __name__ == "__main__":
    main()
