"""Shared-context calibration step against the naive step (METHOD section 5, issue 5 part 4).

    .venv/bin/python bench/calibration_step.py [--context-tokens 128] [--candidate-tokens 48]
                                              [--candidates 4] [--steps 5] [--tiny]

One calibration step scores the gold reply and K candidates that share one context. The naive
step repeats the context on each of the K + 1 rows; the shared step runs the context once and
reuses its KV cache for every row (`forward: shared-context`, the default). Both do forward +
backward of the same sequence log-probabilities (the losses agree to 1e-5: tests). Prints the
speed-up naive / shared (target >= 1.5 when the context is at least twice a candidate's length).
Model: the packaged SmolLM2-135M-Instruct; `--tiny` uses a random model of the same shape with 4
layers (seconds, no download, for a quick look).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from _util import REPO, device, peak_memory_mib, report, reset_peak, synchronize

sys.path.insert(0, str(REPO / "src"))

from bayespref.calibration import continuation_logprobs  # noqa: E402


def load_model(tiny: bool, dev):
    if tiny:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=49152,
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=4,
            num_attention_heads=9,
            num_key_value_heads=3,
            max_position_embeddings=2048,
            tie_word_embeddings=True,
        )
        return LlamaForCausalLM(config).to(dev), "random Llama, SmolLM2-135M shape, 4 layers"
    from bayespref.lm import load_generator

    model = load_generator("smollm2-135m-instruct").model
    return model.to(dev), "SmolLM2-135M-Instruct (packaged GGUF, float32)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context-tokens", type=int, default=128)
    parser.add_argument("--candidate-tokens", type=int, default=48)
    parser.add_argument("--candidates", type=int, default=4, help="K (plus the gold row)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    dev = device(args.device)
    model, described = load_model(args.tiny, dev)
    model.train()
    generator = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size

    def random_ids(n: int) -> list[int]:
        return torch.randint(10, vocab, (n,), generator=generator).tolist()

    rows = args.candidates + 1
    # candidates of slightly different lengths, as real ones are
    lengths = [max(1, args.candidate_tokens - 3 * i) for i in range(rows)]
    steps = [
        (random_ids(args.context_tokens), [random_ids(n) for n in lengths])
        for _ in range(args.steps + 1)
    ]

    def run(shared: bool) -> tuple[list[float], float]:
        seconds = []
        reset_peak(dev)
        for i, (context, continuations) in enumerate(steps):
            synchronize(dev)
            start = time.perf_counter()
            logprobs, mask = continuation_logprobs(
                model, context, continuations, shared_context=shared, pad_token_id=0
            )
            (-(logprobs.sum(1) / mask.sum(1))).mean().backward()
            model.zero_grad(set_to_none=True)
            synchronize(dev)
            if i > 0:  # the first step warms up
                seconds.append(time.perf_counter() - start)
        return seconds, peak_memory_mib(dev)

    naive_1, naive_memory = run(shared=False)
    shared, shared_memory = run(shared=True)
    naive_2, _ = run(shared=False)
    naive = statistics.mean(naive_1 + naive_2)
    report(
        "calibration step, shared context vs naive",
        {
            "model": described,
            "context tokens": args.context_tokens,
            "rows (gold + K)": rows,
            "continuation tokens": f"{min(lengths)}..{max(lengths)}",
            "naive step s (mean of before/after)": naive,
            "shared step s": statistics.mean(shared),
            "speed-up naive / shared": naive / statistics.mean(shared),
            "peak memory naive (MiB)": naive_memory,
            "peak memory shared (MiB)": shared_memory,
            "target": "speed-up >= 1.5 (context >= 2 x candidate)",
        },
        args.json,
    )


if __name__ == "__main__":
    main()
