"""bayespref dpo: pairs read and encoded in the project's prompt format (checked by hand), a tiny
end-to-end TRL DPOTrainer run on exported pairs (metrics, a saved generator that moved, LoRA
merged), resume after a stop signal, and one-line errors for bad configs and bad pair files."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from bayespref.calibration.candidates import candidates_meta_path
from bayespref.config import ConfigError, load_yaml
from bayespref.data.schema import DataError
from bayespref.dpo import (
    DPOConfig,
    encode_pairs,
    pairs_dataset,
    prompt_turns,
    read_pairs,
    train_dpo,
    with_project_ids,
)
from bayespref.export import export_pairs
from bayespref.lm import chat_messages, load_generator, plain_prompt
from bayespref.safety import RunExistsError, TrainingInterrupted

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

REPO = Path(__file__).resolve().parents[1]

CONTEXTS = [
    "I failed my exam.",
    ["My dog died.", "I am sorry.", "I miss him."],
    "I lost my job.",
    "My friend moved away.",
    "I feel alone.",
    "Work is too much.",
]


def write_cache(path: Path) -> Path:
    """A candidate file as calibration writes it: two scored candidates per context."""
    rows = [
        {
            "id": f"c{i}",
            "context": context,
            "gold": "That sounds hard.",
            "candidates": [
                {"text": "I hear you. That is hard.", "score": 0.8, "count": 1},
                {"text": "ok", "score": -0.4, "count": 1},
            ],
            "num_generated": 2,
            "num_unique": 2,
        }
        for i, context in enumerate(CONTEXTS)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    candidates_meta_path(path).write_text(json.dumps({"settings": {}, "complete": True}))
    return path


def exported(tmp_path: Path, prompt_format: str = "text") -> Path:
    pairs = tmp_path / f"pairs-{prompt_format}.jsonl"
    assert (
        export_pairs(write_cache(tmp_path / "c.jsonl"), pairs, prompt_format=prompt_format).pairs
        == 6
    )
    return pairs


def tiny_dpo(tmp_path: Path, generator: str, pairs: Path, *overrides: str) -> DPOConfig:
    return load_yaml(
        DPOConfig,
        None,
        [
            f"output_dir={tmp_path / 'runs'}",
            f"pairs={pairs}",
            f"generator.name={generator}",
            "generator.device=cpu",
            "generator.max_context_tokens=48",
            "generator.max_target_tokens=16",
            "optim.lr=0.01",
            "optim.batch_size=2",
            "optim.grad_accum=1",
            "optim.max_steps=2",
            "optim.warmup_ratio=0.0",
            "eval_every=1",
            "progress=false",
            *overrides,
        ],
    )


def generator_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "generator" / "model.safetensors"))


# -- pairs ---------------------------------------------------------------------------------------


def test_prompt_turns_invert_both_export_formats():
    context = ["My dog died.", "I am sorry.", "I miss him."]
    assert prompt_turns(plain_prompt(context)) == context
    assert prompt_turns(chat_messages(context)) == context
    system = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}]
    assert prompt_turns(system) == ["Hi"]


@pytest.mark.parametrize("prompt_format", ["text", "conversational"])
def test_pairs_are_encoded_like_calibration_candidates(tmp_path, char_generator_dir, prompt_format):
    pairs = read_pairs(exported(tmp_path, prompt_format))
    assert [p["id"] for p in pairs] == [f"c{i}" for i in range(6)]
    assert pairs[1]["context"] == CONTEXTS[1]
    assert (pairs[0]["chosen"], pairs[0]["rejected"]) == ("I hear you. That is hard.", "ok")

    generator = load_generator(char_generator_dir, max_context_tokens=20, max_target_tokens=8)
    encoded = encode_pairs(generator, pairs)
    tokenizer = generator.tokenizer
    # the chat prompt, cut from the left to 20 tokens (characters and special tokens)
    text = tokenizer.apply_chat_template(
        chat_messages(CONTEXTS[1]), tokenize=False, add_generation_prompt=True
    )
    assert encoded[1]["prompt_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"][-20:]
    assert tokenizer.decode(encoded[1]["prompt_ids"]).startswith("ss him.<|im_end|>")
    # "ok" then eos; the chosen reply cut to 8 tokens (eos falls off)
    assert encoded[0]["rejected_ids"] == [*tokenizer.encode("ok", add_special_tokens=False),
                                          generator.eos_token_id]  # fmt: skip
    assert tokenizer.decode(encoded[0]["chosen_ids"]) == "I hear y"


def test_trls_token_ids_are_replaced_by_the_projects(tmp_path, char_generator_dir):
    pairs = read_pairs(exported(tmp_path))
    generator = load_generator(char_generator_dir)
    dataset = pairs_dataset(pairs)
    # what TRL's tokenisation adds: its own ids (here garbage), the row kept
    tokenised = dataset.map(lambda row: {"prompt_ids": [0], "chosen_ids": [0], "rejected_ids": []})
    encoded = encode_pairs(generator, pairs)
    replaced = with_project_ids(tokenised, encoded)
    for row, expected in zip(replaced, encoded, strict=True):
        assert {k: row[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"prompt": "Hi", "chosen": "a"}', "'rejected'"),
        ('{"prompt": "Hi", "chosen": "", "rejected": "b"}', "'chosen'"),
        ('{"prompt": "  ", "chosen": "a", "rejected": "b"}', "no prompt"),
        ("not json", "bad JSON"),
    ],
)
def test_a_bad_pair_names_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"prompt": "Hello", "chosen": "a", "rejected": "b"}\n' + line + "\n")
    with pytest.raises(DataError, match=rf"pairs.jsonl:2: .*{problem}"):
        read_pairs(path)


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dpo.loss_type=nope", "dpo.loss_type must be one of"),
        ("dpo.beta=0", "dpo.beta must be"),
        ("dpo.nope=1", "unknown config key"),
        ("peft.method=prefix", "peft.method must be none|lora"),
        ("on_nonfinite=skip", "on_nonfinite must be stop"),
        ("pairs=null", "dpo needs pairs"),
    ],
)
def test_bad_config_is_one_config_error(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_yaml(DPOConfig, None, [f"output_dir={tmp_path}", "pairs=p.jsonl", override])


def test_shipped_config_matches_the_calibration_budget():
    from bayespref.calibration import CalibrationConfig

    dpo = load_yaml(DPOConfig, REPO / "configs" / "dpo-synthetic.yaml")

    cal = load_yaml(CalibrationConfig, REPO / "configs" / "calibrate-synthetic.yaml")
    train_contexts = cal.data.n - cal.data.n_eval
    per_step = cal.optim.batch_size * cal.optim.grad_accum
    assert dpo.optim.max_steps == math.ceil(cal.optim.epochs * train_contexts / per_step)
    assert dpo.optim.batch_size * dpo.optim.grad_accum == per_step
    assert (dpo.optim.lr, dpo.optim.warmup_ratio) == (cal.optim.lr, cal.optim.warmup_ratio)
    assert dpo.generator == cal.generator
    assert dpo.peft == cal.peft


# -- end to end ----------------------------------------------------------------------------------


def test_dpo_end_to_end_on_exported_pairs(tmp_path, char_generator_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = tiny_dpo(tmp_path, char_generator_dir, exported(tmp_path), "name=full",
                      f"eval_pairs={exported(tmp_path, 'conversational')}")  # fmt: skip
    result = train_dpo(config)
    assert result.steps == 2 and result.train_pairs == 6
    run = config.run_dir
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    train_rows = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2]
    for row in train_rows:
        for key in ("loss", "rewards/margins", "rewards/accuracies", "grad_norm"):
            assert math.isfinite(row[key]), (key, row)
    # policy = reference at the first step: -log sigmoid(0)
    assert train_rows[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    # the shared trainer's schedule (no warm-up here): lr * (2 - step) / 2 at steps 0 and 1
    assert [r["lr"] for r in train_rows] == pytest.approx([0.01, 0.005])
    assert [r["step"] for r in records if r["split"] == "eval"] == [1, 2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["base_generator"]["name"] == char_generator_dir
    assert (run / "config.yaml").is_file()

    model = AutoModelForCausalLM.from_pretrained(result.generator_dir)
    AutoTokenizer.from_pretrained(result.generator_dir)
    base = AutoModelForCausalLM.from_pretrained(char_generator_dir)
    moved = sum(
        float((a - b).abs().sum())
        for a, b in zip(model.state_dict().values(), base.state_dict().values(), strict=True)
    )
    assert moved > 0
    # evaluate-generator's loader takes the run directory
    assert load_generator(str(run)).source["path"] == str(result.generator_dir)
    with pytest.raises(RunExistsError, match="--resume"):
        train_dpo(config)


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path, char_generator_dir, monkeypatch):
    import bayespref.dpo as dpo_module

    pairs = exported(tmp_path)
    full = tiny_dpo(tmp_path, char_generator_dir, pairs, "name=full", "optim.max_steps=3")
    train_dpo(full)

    def signal_during_step_2(self, args, state, control, **kwargs):
        if state.global_step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # GracefulStop: finish the step, save, stop

    monkeypatch.setattr(
        dpo_module.RunCallback, "on_step_begin", signal_during_step_2, raising=False
    )
    config = tiny_dpo(tmp_path, char_generator_dir, pairs, "name=resumed", "optim.max_steps=3")
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train_dpo(config)
    monkeypatch.undo()
    assert not (config.run_dir / "generator").exists()
    train_dpo(config, resume=True)
    records = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3]
    a, b = generator_weights(full.run_dir), generator_weights(config.run_dir)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)


def test_lora_dpo_saves_a_merged_plain_model(tmp_path, char_generator_dir):
    config = tiny_dpo(
        tmp_path, char_generator_dir, exported(tmp_path), "name=lora", "peft.method=lora",
        "peft.r=4", "peft.target_modules=[q_proj, v_proj]", "optim.max_steps=2",
    )  # fmt: skip
    train_dpo(config)
    saved = generator_weights(config.run_dir)
    assert not any("lora" in k for k in saved)
    from safetensors.torch import load_file

    base = load_file(str(Path(char_generator_dir) / "model.safetensors"))
    q, k = "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"
    assert not torch.equal(saved[q], base[q]) and torch.equal(saved[k], base[k])


def test_cli_dpo_and_its_one_line_errors(tmp_path, char_generator_dir, capsys):
    from bayespref.cli import main
    from bayespref.config import save_config

    config = tiny_dpo(tmp_path, char_generator_dir, exported(tmp_path), "name=cli",
                      "optim.max_steps=1")  # fmt: skip
    path = tmp_path / "dpo.yaml"
    save_config(config, path)
    assert main(["dpo", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dpo: 1 steps on 6 pairs" in out and "generator:" in out
    assert main(["dpo", "--config", str(path), "dpo.nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayespref dpo: error: unknown config key") and err.count("\n") == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Hi", "chosen": "a"}\n')
    assert main(["dpo", "--config", str(path), "name=bad", f"pairs={bad}"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1:" in err and err.count("\n") == 1
