"""The calibration recipe: fine-tune a generator on its own ranked candidates.

:func:`calibrate` reads top to bottom: setup (run directory, contexts, generator) ->
candidates (:mod:`.search`, from the base generator before any update) -> resume -> loop
(contexts, loss :func:`.forward.example_loss`, step, held-out gold NLL, checkpoint) -> the
generator saved as a plain Hugging Face folder, LoRA merged (:func:`save_generator`).

``L = w_mle * NLL(gold) + w_rank * L_rank (+ w_gold * L_gold)`` (METHOD section 5;
BRIO-style), fully or with LoRA.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from ..adapters import wrap_peft
from ..checkpoint import (
    CheckpointError,
    atomic_write_dir,
    latest_checkpoint,
    load_optimizer,
    prune_checkpoints,
    rng_state,
    save_optimizer,
    set_rng_state,
    step_dir_name,
    verify_manifest,
)
from ..config import ConfigError, save_config
from ..lm import load_generator
from ..safety import (
    GracefulStop,
    NonFiniteError,
    RunExistsError,
    RunLock,
    TrainingInterrupted,
)
from ..trainer_utils import (
    append_jsonl,
    lr_at,
    micro_batch_indices,
    param_groups,
    seed_everything,
    truncate_metrics,
)
from .candidates import read_candidates
from .config import CalibrationConfig
from .contexts import load_contexts, split_contexts
from .forward import encode_example, example_loss, pooled_gold_nll
from .search import write_candidates

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class CalibrationResult:
    """Where a finished calibration run put its outputs, and its held-out gold NLL."""

    run_dir: Path
    generator_dir: Path
    candidates: Path
    steps: int
    eval_gold_nll: float | None  # after training
    initial_eval_gold_nll: float | None  # before training (None when resumed)


def calibrate(config: CalibrationConfig, resume: bool = False) -> CalibrationResult:
    """Calibrate the generator as configured; outputs go to ``config.run_dir``.

    With ``resume=True`` the newest intact checkpoint is loaded (weights, optimiser, RNG) and
    the run ends with the same weights as an uninterrupted one.
    """
    seed_everything(config.seed)
    with RunLock(config.run_dir), GracefulStop() as stop:
        return _calibrate(config, resume, stop)


def _calibrate(config: CalibrationConfig, resume: bool, stop: GracefulStop) -> CalibrationResult:
    # ---- setup
    run_dir = config.run_dir
    ckpt_root = run_dir / "checkpoint"
    resume_from = latest_checkpoint(ckpt_root) if resume else None
    if not resume and (ckpt_root.exists() or (run_dir / "metrics.jsonl").exists()):
        raise RunExistsError(
            f"{run_dir} already holds a calibration run: pass --resume to continue it, or "
            f"choose another name (name=...)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    train_rows, eval_rows = split_contexts(load_contexts(config.data), config.data, config.seed)
    generator = load_generator(config.generator)

    # ---- candidates (from the base generator, before any update)
    candidates_path = write_candidates(config, train_rows, generator)
    _, candidate_rows = read_candidates(candidates_path)
    examples = [encode_example(generator, row) for row in candidate_rows]
    eval_examples = [
        (generator.prompt_ids(r["context"]), generator.target_ids(r["gold"])) for r in eval_rows
    ]

    model = wrap_peft(generator.model, config.peft, "causal-lm")
    optim = config.optim
    micro_per_epoch = len(examples) // optim.batch_size
    if micro_per_epoch == 0:
        raise ConfigError(
            f"{len(examples)} training contexts are fewer than optim.batch_size={optim.batch_size}"
        )
    steps_per_epoch = max(1, micro_per_epoch // optim.grad_accum)
    total_steps = optim.max_steps or max(1, math.ceil(optim.epochs * steps_per_epoch))
    warmup_steps = int(optim.warmup_ratio * total_steps)
    eval_every = config.eval_every or steps_per_epoch  # 0: once per epoch
    save_every = config.save_every or eval_every
    optimizer = torch.optim.AdamW(
        param_groups(model, optim.weight_decay), lr=optim.lr, betas=tuple(optim.adam_betas)
    )
    step = 0
    initial_nll = None
    metrics_file = run_dir / "metrics.jsonl"

    # ---- resume
    if resume_from is not None:
        step = _load_state(resume_from, model, optimizer)
        truncate_metrics(metrics_file, step)
        logger.info("resumed from %s (step %d)", resume_from, step)
    else:
        initial_nll = pooled_gold_nll(model, eval_examples, generator.pad_token_id)
        if initial_nll is not None:
            append_jsonl(metrics_file, {"step": 0, "split": "eval", "gold_nll": initial_nll})

    # ---- loop
    progress = tqdm(
        total=total_steps, initial=step, disable=not config.progress, desc="calibrate", unit="step"
    )
    model.train()
    eval_nll = None
    while step < total_steps:
        step_start = time.perf_counter()
        totals = dict.fromkeys(("loss", "rank", "mle", "gold"), 0.0)
        for micro in range(optim.grad_accum):
            indices = micro_batch_indices(
                step * optim.grad_accum + micro, len(examples), optim.batch_size, 1, 0, config.seed
            )
            for i in indices:
                terms = example_loss(
                    model, examples[i], config.loss, generator.pad_token_id, config.forward
                )
                scale = optim.batch_size * optim.grad_accum
                (terms["loss"] / scale).backward()
                for key, value in terms.items():
                    totals[key] += float(value.detach()) / scale
        max_norm = optim.max_grad_norm if optim.max_grad_norm is not None else math.inf
        params = [p for p in model.parameters() if p.requires_grad]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        lr = lr_at(step, total_steps, warmup_steps, optim.lr)
        if not (math.isfinite(totals["loss"]) and math.isfinite(grad_norm)):
            raise NonFiniteError(
                f"non-finite loss or gradient at step {step + 1} ({totals}, grad norm "
                f"{grad_norm}); the step was not applied, the last checkpoint is intact"
            )
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{totals['loss']:.4f}")
        record = {"step": step, "split": "train", **totals, "lr": lr, "grad_norm": grad_norm}
        record["epoch"] = step / steps_per_epoch
        record["step_seconds"] = time.perf_counter() - step_start
        append_jsonl(metrics_file, record)

        is_last = step == total_steps
        if step % eval_every == 0 or is_last:
            eval_nll = pooled_gold_nll(model, eval_examples, generator.pad_token_id)
            if eval_nll is not None:
                append_jsonl(metrics_file, {"step": step, "split": "eval", "gold_nll": eval_nll})
                progress.write(f"step {step}: held-out gold NLL {eval_nll:.4f}")
        stopping = stop.requested and not is_last
        if step % save_every == 0 or is_last or stopping:
            _save_state(ckpt_root, model, optimizer, step, config.keep_last)
        if stopping:
            progress.close()
            raise TrainingInterrupted(
                f"stopped by {stop.signal_name or 'a signal'} at step {step}/{total_steps}; "
                f"continue with: bayespref calibrate --config {run_dir / 'config.yaml'} --resume",
                step,
            )
    progress.close()

    # ---- finish: a plain Hugging Face model folder
    generator_dir = save_generator(model, generator.tokenizer, run_dir / "generator")
    summary = {
        "base_generator": generator.source,
        "scorer": {"run": config.scorer.run, "rule": config.scorer.rule},
        "candidates": str(candidates_path),
        "steps": step,
        "train_contexts": len(examples),
        "eval_contexts": len(eval_examples),
        "initial_eval_gold_nll": initial_nll,
        "final_eval_gold_nll": eval_nll,
        "generator_dir": str(generator_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return CalibrationResult(run_dir, generator_dir, candidates_path, step, eval_nll, initial_nll)


def _trainable_state(model: torch.nn.Module) -> dict[str, Tensor]:
    """The weights being trained, on the CPU (LoRA: the adapters only)."""
    return {
        name: p.detach().contiguous().cpu()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def _save_state(ckpt_root: Path, model, optimizer, step: int, keep_last: int) -> None:
    """An atomic checkpoint of step ``step``: trainable weights, optimiser, RNG states."""

    def write(folder: Path) -> None:
        # trainable weights only: everything under full fine-tuning, the adapters under LoRA
        save_file(_trainable_state(model), str(folder / "trainable.safetensors"))
        save_optimizer(optimizer, folder)
        save_file({"torch": torch.get_rng_state()}, str(folder / "rng.safetensors"))
        payload = {"step": step, **rng_state()}  # Python's and NumPy's generators
        (folder / "trainer_state.json").write_text(json.dumps(payload), encoding="utf-8")

    try:
        atomic_write_dir(ckpt_root / step_dir_name(step), write)
    except OSError as err:
        raise CheckpointError(
            f"could not write the checkpoint of step {step} ({err}); the previous one is "
            f"intact. Free space (or fix the error) and continue with --resume."
        ) from err
    prune_checkpoints(ckpt_root, keep_last)


def _load_state(folder: Path, model, optimizer) -> int:
    """Load what :func:`_save_state` wrote into ``model`` and ``optimizer``; the step."""
    verify_manifest(folder)
    saved = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != expected:
        raise CheckpointError(
            f"{folder}: its weights do not match this model (missing "
            f"{sorted(expected - set(saved))[:3]}, unexpected {sorted(set(saved) - expected)[:3]})"
        )
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    load_optimizer(optimizer, folder)
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
    payload = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    set_rng_state(payload)
    return int(payload["step"])


def save_generator(model: Any, tokenizer: Any, folder: Path) -> Path:
    """Write a plain Hugging Face folder (LoRA merged) that ``from_pretrained`` loads.

    ``model``: a transformers causal LM, or a peft model around one.
    """
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    # A GGUF-loaded model carries a quantizer and refuses save_pretrained; its weights are
    # already dequantised float tensors, so both can go.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.eval()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return atomic_write_dir(folder, write)
