"""The calibration recipe: fine-tune a generator on its own ranked candidates.

:func:`calibrate` reads top to bottom: setup (run directory, contexts, generator) ->
candidates (:mod:`.search`, from the base generator before any update) -> the shared trainer
(:mod:`bayespref.trainer`: resume, loop, held-out gold NLL, checkpoints) over
:class:`CalibrationTask` (loss :func:`.forward.example_loss`) -> the generator saved as a plain
Hugging Face folder, LoRA merged (:func:`save_generator`).

``L = w_mle * NLL(gold) + w_rank * L_rank (+ w_gold * L_gold)`` (METHOD section 5;
BRIO-style), fully or with LoRA.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..adapters import wrap_peft
from ..checkpoint import CheckpointError, atomic_write_dir
from ..config import ConfigError
from ..lm import load_generator, resolve_device
from ..trainer import Backward, Trainer
from ..trainer_utils import make_accelerator, seed_everything
from .candidates import read_candidates
from .config import CalibrationConfig
from .contexts import load_contexts, split_contexts
from .forward import encode_example, example_loss, pooled_gold_nll
from .ranking import HeldOutRanking, held_out_ranking
from .search import write_candidates, write_held_out_candidates

TRAINABLE_FILE = "trainable.safetensors"

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


class CalibrationTask:
    """The calibration recipe's side of :class:`bayespref.trainer.Task`: micro-batches of
    training contexts (gold + ranked candidates each, forwarded one context at a time), the
    held-out gold NLL and (``ranking``) the generator's ranking accuracy on the held-out
    candidates, and the trainable weights (LoRA: the adapters only)."""

    eval_split = "eval"
    headline_metrics: tuple[str, ...] = ("gold_nll", "rank_acc_pm", "rank_acc_oracle")

    def __init__(
        self,
        config: CalibrationConfig,
        examples: list,
        eval_examples: list,
        ids: list,
        pad_token_id: int,
        ranking: HeldOutRanking | None = None,
    ):
        self.config = config
        self.examples = examples
        self.eval_examples = eval_examples
        self.ids = ids
        self.pad_token_id = pad_token_id
        self.ranking = ranking
        self.num_items = len(examples)

    def forward_backward(
        self, model: torch.nn.Module, micro_batches: list[np.ndarray], backward: Backward
    ) -> dict[str, float]:
        totals = dict.fromkeys(("loss", "rank", "mle", "gold"), 0.0)
        scale = self.config.optim.batch_size * len(micro_batches)
        for indices in micro_batches:
            for i in indices:  # one context at a time: gold + K candidates share its forward
                terms = example_loss(
                    model,
                    self.examples[i],
                    self.config.loss,
                    self.pad_token_id,
                    self.config.forward,
                )
                backward(terms["loss"] / scale)  # activations freed context by context
                for key, value in terms.items():
                    totals[key] += float(value.detach()) / scale
        return totals

    def evaluate(self, model: torch.nn.Module) -> dict[str, float] | None:
        results = {}
        nll = pooled_gold_nll(model, self.eval_examples, self.pad_token_id)
        if nll is not None:
            results["gold_nll"] = nll
        if self.ranking is not None:
            results.update(
                self.ranking.evaluate(
                    model, self.config.loss, self.pad_token_id, self.config.forward
                )
            )
        return results or None

    def item_ids(self, indices: np.ndarray) -> list:
        return [self.ids[i] for i in indices]

    def save_weights(self, model: torch.nn.Module, folder: Path) -> None:
        # trainable weights only: everything under full fine-tuning, the adapters under LoRA
        save_file(trainable_state(model), str(folder / TRAINABLE_FILE))

    def load_weights(self, model: torch.nn.Module, folder: Path) -> None:
        saved = load_file(str(folder / TRAINABLE_FILE))
        params = dict(model.named_parameters())
        expected = {n for n, p in params.items() if p.requires_grad}
        if set(saved) != expected:
            raise CheckpointError(
                f"{folder}: its weights do not match this model (missing "
                f"{sorted(expected - set(saved))[:3]}, unexpected "
                f"{sorted(set(saved) - expected)[:3]})"
            )
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)

    def save_best(self, model: torch.nn.Module, folder: Path) -> None:
        self.save_weights(model, folder)

    def state_dict(self) -> dict | None:
        return None

    def load_state_dict(self, state: dict | None) -> None:
        return None


def calibrate(config: CalibrationConfig, resume: bool = False) -> CalibrationResult:
    """Calibrate the generator as configured; outputs go to ``config.run_dir``.

    With ``resume=True`` the newest intact checkpoint is loaded (weights, optimiser, RNG) and
    the run ends with the same weights as an uninterrupted one.
    """
    seed_everything(config.seed)
    trainer_cpu = resolve_device(config.generator.device).type == "cpu"
    accelerator = make_accelerator(cpu=trainer_cpu)
    if accelerator.num_processes > 1:
        raise ConfigError(
            "calibrate trains on one process (generate shards its search across processes)"
        )
    trainer = Trainer(
        config,
        config.optim,
        accelerator,
        resume=resume,
        command="bayespref calibrate",
        evaluate_at_start=True,
    )
    with trainer:
        # ---- contexts and the base generator
        train_rows, eval_rows = split_contexts(
            load_contexts(config.data, require_gold=config.needs_reference),
            config.data,
            config.seed,
        )
        generator = load_generator(config.generator)

        # ---- candidates (from the base generator, before any update)
        candidates_path = write_candidates(config, train_rows, generator)
        _, candidate_rows = read_candidates(candidates_path)
        ranking, held_out_path = None, None
        if config.eval_ranking and eval_rows:  # what the ranking loss teaches, measured apart
            with torch.random.fork_rng(devices=[]):  # the run's RNG stream stays as without it
                held_out_path = write_held_out_candidates(config, eval_rows, generator)
            ranking = held_out_ranking(
                generator,
                read_candidates(held_out_path)[1],
                pm=config.scorer.run is not None,
                oracle=config.data.source == "synthetic",
            )
        try:
            examples = [
                encode_example(generator, row, config.loss.mle_target) for row in candidate_rows
            ]
        except ValueError as err:
            raise ConfigError(f"{candidates_path}: {err}") from None
        eval_examples = [  # the held-out gold NLL: contexts that have a reference reply
            (generator.prompt_ids(r["context"]), generator.target_ids(r["gold"]))
            for r in eval_rows
            if r["gold"] is not None
        ]
        if len(examples) < config.optim.batch_size:
            raise ConfigError(
                f"{len(examples)} training contexts are fewer than "
                f"optim.batch_size={config.optim.batch_size}"
            )

        # ---- train
        model = wrap_peft(generator.model, config.peft, "causal-lm")
        ids = [row["id"] for row in candidate_rows]
        task = CalibrationTask(
            config, examples, eval_examples, ids, generator.pad_token_id, ranking
        )
        outcome = trainer.fit(model, task)
        model = accelerator.unwrap_model(model)

        # ---- finish: a plain Hugging Face model folder
        generator_dir = save_generator(model, generator.tokenizer, config.run_dir / "generator")
    initial_nll = (outcome.initial_eval or {}).get("gold_nll")
    eval_nll = (outcome.last_eval or {}).get("gold_nll")
    summary = {
        "base_generator": generator.source,
        "scorer": {"run": config.scorer.run, "rule": config.scorer.rule},
        "candidates": str(candidates_path),
        "steps": outcome.state.step,
        "skipped_steps": outcome.state.skipped_steps,
        "train_contexts": len(examples),
        "eval_contexts": len(eval_examples),
        "initial_eval_gold_nll": initial_nll,
        "final_eval_gold_nll": eval_nll,
        "generator_dir": str(generator_dir),
    }
    if ranking is not None:  # the generator's ranking accuracy before and after
        summary["held_out_candidates"] = str(held_out_path)
        summary["held_out_candidate_count"] = ranking.num_candidates
        for name in ranking.references:
            key = f"rank_acc_{name}"
            summary[f"held_out_pairs_{name}"] = ranking.num_pairs(name)
            summary[f"initial_eval_{key}"] = (outcome.initial_eval or {}).get(key)
            summary[f"final_eval_{key}"] = (outcome.last_eval or {}).get(key)
    (config.run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return CalibrationResult(
        config.run_dir, generator_dir, candidates_path, outcome.state.step, eval_nll, initial_nll
    )


def trainable_state(model: torch.nn.Module) -> dict[str, Tensor]:
    """The weights being trained, on the CPU (LoRA: the adapters only)."""
    return {
        name: p.detach().contiguous().cpu()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


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
