"""Write reference outputs of transformers 4.56.2 diverse (group) beam search for tiny models.

transformers >= 4.57 no longer runs group beam search in the library, so `bayespref.beam_search`
reimplements it; `tests/test_generation.py` compares that reimplementation, token for token,
with what this script records. Run it in a separate virtual environment that has the last
release with the in-library implementation:

    python3 -m venv .venv-ref
    .venv-ref/bin/pip install torch==2.13.0 transformers==4.56.2 safetensors numpy
    .venv-ref/bin/python scripts/make_dbs_fixtures.py

It writes, under tests/fixtures/dbs/:
    <model>/config.json, <model>/model.safetensors   tiny randomly initialised causal LMs (seeded)
    cases.json                                        inputs, settings and 4.56.2's outputs

Generation is deterministic (no sampling), so rerunning reproduces the same files.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "fixtures" / "dbs"

VOCAB = 128
SPECIAL = 3  # ids 0..2 are bos/eos/pad of the model config; prompts use ids >= 3

# (num_beams, num_beam_groups, diversity_penalty, length_penalty, early_stopping, max_new_tokens,
#  min_new_tokens, num_return_sequences, eos choice, pad choice, batches)
# eos choice: which of the model's frequent tokens act as eos ("a", "b" or "ab" for both), so that
# some beams finish early; pad choice: "eos" (pad = first eos, generate's fallback) or "zero".
SETTINGS = [
    dict(name="k4g2", num_beams=4, num_beam_groups=2, diversity_penalty=1.0, length_penalty=1.0,
         early_stopping=False, max_new_tokens=12, min_new_tokens=0, num_return_sequences=4,
         eos="a", pad="eos", batches=["ragged", "even"]),
    dict(name="k6g3-two-eos-min3", num_beams=6, num_beam_groups=3, diversity_penalty=0.5,
         length_penalty=0.7, early_stopping=True, max_new_tokens=10, min_new_tokens=3,
         num_return_sequences=6, eos="ab", pad="zero", batches=["ragged", "short"]),
    dict(name="k4g4-never", num_beams=4, num_beam_groups=4, diversity_penalty=2.0,
         length_penalty=1.0, early_stopping="never", max_new_tokens=10, min_new_tokens=0,
         num_return_sequences=4, eos="b", pad="zero", batches=["ragged", "even"]),
    dict(name="k6g2-never-lp2-min2", num_beams=6, num_beam_groups=2, diversity_penalty=1.5,
         length_penalty=2.0, early_stopping="never", max_new_tokens=8, min_new_tokens=2,
         num_return_sequences=6, eos="a", pad="eos", batches=["ragged", "short"]),
    dict(name="k4g2-neg-lp-return2", num_beams=4, num_beam_groups=2, diversity_penalty=0.75,
         length_penalty=-0.5, early_stopping=False, max_new_tokens=12, min_new_tokens=0,
         num_return_sequences=2, eos="a", pad="zero", batches=["ragged", "even"]),
    dict(name="k10g10-reference", num_beams=10, num_beam_groups=10, diversity_penalty=4.0,
         length_penalty=1.0, early_stopping=False, max_new_tokens=10, min_new_tokens=4,
         num_return_sequences=10, eos="a", pad="eos", batches=["ragged", "short"]),
    dict(name="k8g4-early-true", num_beams=8, num_beam_groups=4, diversity_penalty=0.3,
         length_penalty=1.3, early_stopping=True, max_new_tokens=12, min_new_tokens=0,
         num_return_sequences=8, eos="b", pad="eos", batches=["ragged", "even"]),
]  # fmt: skip


def build_models(seed: int) -> dict[str, torch.nn.Module]:
    """Two tiny decoder-only LMs. A large initializer_range makes the next-token distributions
    peaked, so the search has clear winners (few near-ties) and eos is often chosen."""
    common = dict(bos_token_id=0, eos_token_id=1, pad_token_id=2)
    torch.manual_seed(seed)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=2,
            initializer_range=0.3, **common,
        )
    )  # fmt: skip
    torch.manual_seed(seed + 1)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            initializer_range=0.3, tie_word_embeddings=False, **common,
        )
    )  # fmt: skip
    return {"gpt2-tiny": gpt2.eval(), "llama-tiny": llama.eval()}


def make_batches(seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Left-padded prompt batches: (input_ids, attention_mask), each (B, T)."""
    g = torch.Generator().manual_seed(seed)
    batches = {}
    for name, lengths in {"ragged": [6, 3, 8], "even": [5, 5], "short": [1, 4]}.items():
        T = max(lengths)
        ids = torch.full((len(lengths), T), 2, dtype=torch.long)  # 2 = the model's pad id
        mask = torch.zeros((len(lengths), T), dtype=torch.long)
        for b, n in enumerate(lengths):
            ids[b, T - n :] = torch.randint(SPECIAL, VOCAB, (n,), generator=g)
            mask[b, T - n :] = 1
        batches[name] = (ids, mask)
    return batches


def frequent_tokens(model, batches) -> list[int]:
    """The two tokens greedy decoding emits most often: used as eos so that beams finish early."""
    counts: Counter[int] = Counter()
    for ids, mask in batches.values():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=12,
            min_new_tokens=12, eos_token_id=1, pad_token_id=2,
        )  # fmt: skip
        counts.update(out[:, ids.shape[1] :].flatten().tolist())
    return [tok for tok, _ in counts.most_common(2)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    models = build_models(args.seed)
    batches = make_batches(args.seed)
    cases = []
    for model_name, model in models.items():
        model.save_pretrained(args.out / model_name, safe_serialization=True)
        token_a, token_b = frequent_tokens(model, batches)
        eos_choices = {"a": [token_a], "b": [token_b], "ab": [token_a, token_b]}
        for s in SETTINGS:
            eos = eos_choices[s["eos"]]
            pad = eos[0] if s["pad"] == "eos" else 0
            for batch_name in s["batches"]:
                ids, mask = batches[batch_name]
                settings = {
                    k: s[k]
                    for k in (
                        "num_beams", "num_beam_groups", "diversity_penalty", "length_penalty",
                        "early_stopping", "max_new_tokens", "min_new_tokens", "num_return_sequences",
                    )
                }  # fmt: skip
                with torch.no_grad():
                    out = model.generate(
                        input_ids=ids.clone(),
                        attention_mask=mask.clone(),
                        do_sample=False,
                        eos_token_id=eos,
                        pad_token_id=pad,
                        return_dict_in_generate=True,
                        output_scores=True,  # else 4.56 returns sequences_scores=None
                        **settings,
                    )
                new = out.sequences[:, ids.shape[1] :]
                n_early = int((new == eos[0]).any(dim=1).sum())
                print(
                    f"{model_name:10s} {s['name']:22s} {batch_name:6s} eos={eos} "
                    f"out={tuple(out.sequences.shape)} ended_with_eos={n_early}/{new.shape[0]}"
                )
                cases.append(
                    {
                        "name": f"{model_name}/{s['name']}/{batch_name}",
                        "model": model_name,
                        "input_ids": ids.tolist(),
                        "attention_mask": mask.tolist(),
                        "settings": {**settings, "eos_token_id": eos, "pad_token_id": pad},
                        "sequences": out.sequences.tolist(),
                        "sequence_scores": out.sequences_scores.tolist(),
                    }
                )
    meta = {
        "generated_by": "scripts/make_dbs_fixtures.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "seed": args.seed,
        "attn_implementation": {k: m.config._attn_implementation for k, m in models.items()},
    }
    with open(args.out / "cases.json", "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, indent=None, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {len(cases)} cases to {args.out / 'cases.json'}")


if __name__ == "__main__":
    main()
