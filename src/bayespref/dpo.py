"""The DPO peer of calibration: TRL's ``DPOTrainer`` on preference pairs (``bayespref dpo``).

DPO (Rafailov et al. 2023) fits the policy ``pi`` to pairs ``(x, y_w, y_l)`` against a frozen
reference ``pi_ref`` (the base generator)::

    L = -log sigmoid(beta * [(log pi(y_w|x) - log pi_ref(y_w|x))
                             - (log pi(y_l|x) - log pi_ref(y_l|x))])

(``dpo.loss_type=sigmoid``; TRL's other loss types are available by name). :func:`train_dpo`
reads top to bottom: the run directory (lock, refusal to overwrite, ``config.yaml``) -> the pairs
(:func:`read_pairs`: a file of ``bayespref export-pairs`` or any TRL ``prompt`` / ``chosen`` /
``rejected`` JSONL) -> the generator, loaded as calibration loads it
(:func:`bayespref.lm.load_generator`, the same ``generator`` section), LoRA through the shared
``peft`` section -> ``trl.DPOTrainer`` -> ``<run>/generator/``, a plain Hugging Face folder with
LoRA merged, which ``bayespref evaluate-generator --calibrated <run>`` loads like a calibration
run's.

**Token ids are the project's, not TRL's.** Every pair is encoded as calibration encodes a
candidate: the prompt is :meth:`Generator.prompt_ids` of the context (chat template with roles
alternating back from the last, user, turn; or plain turns; cut from the left to
``generator.max_context_tokens``) and each reply is :meth:`Generator.target_ids` (its tokens then
eos, cut to ``generator.max_target_tokens``). TRL tokenises the text rows it is given; those ids
are replaced by these before training, so DPO trains on exactly the prompts evaluate-generator
decodes from. The context of a pair is its prompt's turns: a conversational prompt's messages
(system messages dropped), or a text prompt's non-blank lines (the inverse of
:func:`bayespref.lm.plain_prompt`, the prompt export-pairs writes with ``--prompt-format
text``).

Optimisation is the shared ``optim`` section, counted as the shared trainer counts it:
``batch_size`` pairs per micro-batch, ``grad_accum`` micro-batches per step, ``max_steps`` or
``epochs`` (:func:`total_optimiser_steps`), AdamW with the trainer's own learning-rate schedule
(:func:`optimiser_and_schedule`), so a DPO run and a calibration run with the same ``optim``
section take the same learning rates. Metrics (TRL's loss, ``rewards/margins``,
``rewards/accuracies``, ..., ``lr``) go to ``<run>/metrics.jsonl`` at every step; checkpoints are TRL's (``<run>/checkpoint/checkpoint-N``,
``keep_last`` kept) and ``resume=True`` continues from the newest one.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, TrainerCallback

from .adapters import wrap_peft
from .checkpoint import atomic_write_dir
from .config import (
    ConfigError,
    OptimConfig,
    PeftConfig,
    RunConfig,
    field_help,
    save_config,
    section_default,
)
from .data.pairwise import jsonl_objects, load_pairwise
from .data.schema import DataError
from .lm import (
    GENERATOR_DIR,
    Generator,
    GeneratorConfig,
    load_generator,
    plain_prompt,
    resolve_device,
)
from .safety import (
    GracefulStop,
    NonFiniteError,
    NothingToResumeError,
    RunExistsError,
    RunLock,
    TrainingInterrupted,
)
from .trainer_utils import append_jsonl, lr_at, param_groups, seed_everything, truncate_metrics

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
# trl 1.16 DPOConfig.loss_type
LOSS_TYPES = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
    "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Config


@dataclasses.dataclass
class DPOLossConfig:
    """The DPO objective (TRL's ``beta``, ``loss_type``, ``label_smoothing``)."""

    beta: float = field_help(0.1, "beta: how far the policy may move from the reference")
    loss_type: str = field_help("sigmoid", f"TRL loss: {' | '.join(LOSS_TYPES)}")
    label_smoothing: float = field_help(
        0.0, "robust: probability a label is flipped, in [0, 0.5); exo_pair: epsilon"
    )

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"dpo.loss_type must be one of {'|'.join(LOSS_TYPES)}, got "
                              f"{self.loss_type!r}")  # fmt: skip
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"dpo.beta must be a finite number > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ConfigError(
                f"dpo.label_smoothing must be in [0, 0.5), got {self.label_smoothing}"
            )


@dataclasses.dataclass
class DPOConfig(RunConfig):
    """A DPO run: the base generator fine-tuned on preference pairs with ``trl.DPOTrainer``."""

    name: str = field_help("dpo", "run name: outputs go to <output_dir>/<name>/")
    pairs: str | None = field_help(
        None, "training pairs: JSONL of bayespref export-pairs or TRL prompt/chosen/rejected"
    )
    eval_pairs: str | None = field_help(
        None, "held-out pairs evaluated every eval_every steps (null: none)"
    )
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    dpo: DPOLossConfig = dataclasses.field(default_factory=DPOLossConfig)
    optim: OptimConfig = section_default(
        OptimConfig, lr=1e-5, weight_decay=0.0, epochs=1.0, batch_size=2, grad_accum=4
    )
    peft: PeftConfig = dataclasses.field(default_factory=PeftConfig)

    def __post_init__(self):
        super().__post_init__()
        if not self.pairs:
            raise ConfigError("dpo needs pairs=<JSONL> (bayespref export-pairs writes one)")
        if self.peft.method not in ("none", "lora"):
            raise ConfigError(
                f"peft.method must be none|lora for a generator (lora is merged into the saved "
                f"model), got {self.peft.method!r}"
            )
        if self.on_nonfinite != "stop":
            raise ConfigError(
                "on_nonfinite must be stop for dpo: TRL's trainer applies a step before its loss "
                "is seen, so a non-finite step cannot be skipped"
            )


# --------------------------------------------------------------------------------------------
# Pairs


def prompt_turns(prompt: Any) -> list[str]:
    """The context of a TRL prompt: a text prompt's non-blank lines (the inverse of
    :func:`~bayespref.lm.plain_prompt`), or a conversational prompt's message texts, system
    messages left out (roles are re-derived: they alternate back from the last, user, turn)."""
    if isinstance(prompt, str):
        return [line for line in prompt.split("\n") if line.strip()]
    turns = []
    for message in prompt or []:
        if isinstance(message, dict):
            if message.get("role") == "system":
                continue
            message = message.get("content")
        if isinstance(message, str) and message.strip():
            turns.append(message)
    return turns


def read_pairs(path: str | Path) -> list[dict]:
    """``{"id", "context" (turns), "chosen", "rejected"}`` per pair of a TRL JSONL file.

    Rows are validated by :func:`bayespref.data.pairwise.load_pairwise` (``format="trl"``:
    strings or conversations, ids unique); a bad row, or a pair without a prompt, is a
    :class:`DataError` naming the file and line.
    """
    source = str(path)
    dataset = load_pairwise(path, format="trl")
    text = Path(path).read_text(encoding="utf-8").removeprefix("\ufeff")  # decoded above
    pairs = []
    for example, (record, line) in zip(dataset.examples, jsonl_objects(text, source), strict=True):
        turns = prompt_turns(record["prompt"]) if "prompt" in record else list(example.context)
        if not turns:
            raise DataError(
                "the pair has no prompt: nothing to condition the reply on", source, line
            )
        pairs.append({"id": example.id, "context": turns, "chosen": example.response_a,
                      "rejected": example.response_b})  # fmt: skip
    return pairs


def encode_pairs(generator: Generator, pairs: list[dict]) -> list[dict[str, list[int]]]:
    """TRL's ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` in the project's prompt format
    (the generator's chat template setting; replies end with eos; both cut to the configured
    lengths)."""
    return [
        {
            "prompt_ids": generator.prompt_ids(p["context"]),
            "chosen_ids": generator.target_ids(p["chosen"]),
            "rejected_ids": generator.target_ids(p["rejected"]),
        }
        for p in pairs
    ]


def pairs_dataset(pairs: list[dict]) -> Any:
    """A ``datasets.Dataset`` of text pairs for TRL, with a ``row`` column that points back to
    the pair (its token ids are replaced by :func:`encode_pairs`' after TRL's tokenisation)."""
    from datasets import Dataset

    rows = [{"row": i, "prompt": plain_prompt(p["context"]), "chosen": p["chosen"],
             "rejected": p["rejected"]} for i, p in enumerate(pairs)]  # fmt: skip
    return Dataset.from_list(rows)


def with_project_ids(dataset: Any, encoded: list[dict[str, list[int]]]) -> Any:
    """``dataset`` (tokenised by TRL) with each row's ids replaced by ``encoded[row]``."""
    return dataset.map(lambda example: encoded[example["row"]])


# --------------------------------------------------------------------------------------------
# Logging, stopping, saving


class RunCallback(TrainerCallback):
    """Writes every TRL log to ``metrics.jsonl`` (``split`` train or eval), stops on a
    non-finite loss or gradient, and turns a stop signal into a save and a stop."""

    def __init__(self, metrics_file: Path, stop: GracefulStop):
        self.metrics_file = metrics_file
        self.stop = stop

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "learning_rate" in logs:
            logs["lr"] = logs.pop("learning_rate")  # the shared trainer's name
        if "loss" in logs:
            record = {"step": state.global_step, "split": "train", **logs}
        elif "eval_loss" in logs:
            evaluated = {k.removeprefix("eval_"): v for k, v in logs.items()}
            record = {"step": state.global_step, "split": "eval", **evaluated}
        else:
            return  # the end-of-training summary (runtime, mean loss): summary.json has it
        append_jsonl(self.metrics_file, record)
        values = [record.get("loss"), record.get("grad_norm")]
        if record["split"] == "train" and not all(v is None or math.isfinite(v) for v in values):
            raise NonFiniteError(
                f"non-finite DPO step {state.global_step} (loss {values[0]}, gradient norm "
                f"{values[1]}); the last good checkpoint is the newest under "
                f"{Path(args.output_dir)} (lower optim.lr or dpo.beta)"
            )

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop.requested and state.global_step < state.max_steps:
            control.should_save = True
            control.should_training_stop = True


def merged_model(model: Any) -> Any:
    """The transformers model to save: LoRA merged (TRL's frozen ``ref`` adapter dropped)."""
    if hasattr(model, "merge_and_unload"):
        if "ref" in getattr(model, "peft_config", {}):
            model.delete_adapter("ref")
        model = model.merge_and_unload()
    return model


def drop_quantizer(model: Any) -> Any:
    """A GGUF-loaded model carries a quantizer although its weights are dequantised floats;
    trainers refuse to train it and ``save_pretrained`` refuses to save it, so it goes (with
    the quantizer's own ``remove_quantization_config``: the flag and the config entry too)."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    return model


def save_policy(model: Any, tokenizer: Any, folder: Path) -> Path:
    """Write a plain Hugging Face folder (LoRA merged) that ``from_pretrained`` loads."""
    model = drop_quantizer(merged_model(model))
    model.eval()

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return atomic_write_dir(folder, write)


def total_optimiser_steps(num_pairs: int, optim: OptimConfig) -> int:
    """``optim.max_steps``, else ``ceil(epochs * steps_per_epoch)`` with ``steps_per_epoch =
    max(1, (num_pairs // batch_size) // grad_accum)``: the shared trainer's count."""
    micro_per_epoch = num_pairs // optim.batch_size
    if micro_per_epoch == 0:
        raise ConfigError(
            f"{num_pairs} training pairs are fewer than optim.batch_size={optim.batch_size}"
        )
    steps_per_epoch = max(1, micro_per_epoch // optim.grad_accum)
    return optim.max_steps or max(1, math.ceil(optim.epochs * steps_per_epoch))


def optimiser_and_schedule(model: torch.nn.Module, optim: OptimConfig, total_steps: int):
    """AdamW (no decay on biases and norms) and the shared trainer's schedule
    (:func:`bayespref.trainer_utils.lr_at`: linear warm-up over ``int(warmup_ratio * total)``
    steps, then linear decay to 0), so the DPO run's learning rates equal calibration's."""
    groups = param_groups(model, optim.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.adam_betas))
    warmup_steps = int(optim.warmup_ratio * total_steps)

    def scale(step: int) -> float:  # LambdaLR multiplies optim.lr by this
        return lr_at(step, total_steps, warmup_steps, 1.0)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, scale)


def trl_arguments(config: DPOConfig, has_eval: bool, total_steps: int) -> Any:
    """``trl.DPOConfig`` from the shared sections (no truncation by TRL: the ids are cut
    already; no mixed precision and no activation checkpointing, like calibration). The
    optimiser and its schedule are passed to the trainer (:func:`optimiser_and_schedule`)."""
    from trl import DPOConfig as TRLConfig

    optim = config.optim
    eval_every = config.eval_every or None
    save_every = config.save_every or eval_every
    return TRLConfig(
        output_dir=str(config.run_dir / CHECKPOINT_DIR),
        beta=config.dpo.beta,
        loss_type=[config.dpo.loss_type],
        label_smoothing=config.dpo.label_smoothing,
        max_length=None,
        learning_rate=optim.lr,
        max_grad_norm=optim.max_grad_norm if optim.max_grad_norm is not None else 0.0,
        max_steps=total_steps,
        per_device_train_batch_size=optim.batch_size,
        per_device_eval_batch_size=optim.batch_size,
        gradient_accumulation_steps=optim.grad_accum,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=1,
        logging_nan_inf_filter=False,  # a non-finite loss must be seen, not averaged away
        eval_strategy=("steps" if eval_every else "epoch") if has_eval else "no",
        eval_steps=eval_every,
        save_strategy="steps" if save_every else "epoch",
        save_steps=save_every or 1,  # unused when saving once per epoch
        save_total_limit=config.keep_last,
        report_to=["tensorboard"] if config.tensorboard else "none",  # <run>/checkpoint/runs/
        disable_tqdm=not config.progress,
        use_cpu=resolve_device(config.generator.device).type == "cpu",
        bf16=False,
        fp16=False,
        activation_checkpointing=False,
        dataloader_num_workers=0,
    )


# --------------------------------------------------------------------------------------------
# The recipe


@dataclasses.dataclass
class DPOResult:
    """Where a finished DPO run put its outputs, and its last logged training metrics."""

    run_dir: Path
    generator_dir: Path
    steps: int
    train_pairs: int
    final: dict


def claim_run_dir(config: DPOConfig, resume: bool) -> Path | None:
    """Refuse to overwrite a run (or to resume none); save ``config.yaml``; the checkpoint to
    resume from (None: a fresh start), with later ``metrics.jsonl`` records dropped."""
    from transformers.trainer_utils import get_last_checkpoint

    run_dir, metrics_file = config.run_dir, config.run_dir / METRICS_FILE
    ckpt_root = run_dir / CHECKPOINT_DIR
    holds_run = ckpt_root.exists() or metrics_file.exists()
    if resume and not holds_run:
        raise NothingToResumeError(f"{run_dir} holds no run to resume; start it without --resume")
    if not resume and holds_run:
        raise RunExistsError(
            f"{run_dir} already holds a run: pass --resume to continue it, or choose another "
            f"name (name=...)"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    last = get_last_checkpoint(str(ckpt_root)) if ckpt_root.is_dir() else None
    if resume:
        step = int(Path(last).name.rsplit("-", 1)[1]) if last else -1
        truncate_metrics(metrics_file, step)
        if last is None:
            logger.warning("%s: no checkpoint to resume from; starting over", run_dir)
    return Path(last) if resume and last else None


def train_dpo(config: DPOConfig, resume: bool = False) -> DPOResult:
    """Fine-tune the generator with DPO as configured; outputs go to ``config.run_dir``.

    With ``resume=True`` TRL's newest checkpoint (weights, optimiser, scheduler, RNG, data
    position) is loaded and training continues from its step.
    """
    from accelerate.state import AcceleratorState

    try:
        from trl import DPOTrainer
    except ImportError as err:
        raise ConfigError(
            f"bayespref dpo needs TRL ({err}): pip install 'bayespref[trl]'"
        ) from None

    seed_everything(config.seed)
    pairs = read_pairs(str(config.pairs))  # a bad file stops before the run directory is made
    eval_pairs = read_pairs(config.eval_pairs) if config.eval_pairs else []
    total_steps = total_optimiser_steps(len(pairs), config.optim)
    with RunLock(config.run_dir), GracefulStop() as stop:
        resume_from = claim_run_dir(config, resume)

        # ---- the base generator and the pairs in its prompt format
        generator = load_generator(config.generator)
        encoded, eval_encoded = encode_pairs(generator, pairs), encode_pairs(generator, eval_pairs)

        # ---- policy and reference
        policy: Any = drop_quantizer(generator.model)
        # full fine-tuning: a frozen copy of the base; LoRA: TRL freezes a copy of the new
        # adapter (zero at the start, so the reference is the base)
        reference = copy.deepcopy(policy) if config.peft.method == "none" else None
        policy = wrap_peft(policy, config.peft, "causal-lm")

        # ---- train
        args = trl_arguments(config, bool(eval_pairs), total_steps)
        trainer = DPOTrainer(
            model=policy,
            ref_model=reference,
            args=args,
            train_dataset=pairs_dataset(pairs),
            eval_dataset=pairs_dataset(eval_pairs) if eval_pairs else None,
            processing_class=generator.tokenizer,
            callbacks=[RunCallback(config.run_dir / METRICS_FILE, stop)],
            optimizers=optimiser_and_schedule(policy, config.optim, total_steps),
        )
        if not config.progress:  # no bar: no printed log dicts either (metrics.jsonl has them)
            trainer.remove_callback(PrinterCallback)
        trainer.train_dataset = with_project_ids(trainer.train_dataset, encoded)
        if eval_pairs:
            trainer.eval_dataset = with_project_ids(trainer.eval_dataset, eval_encoded)
        try:
            outcome = trainer.train(
                resume_from_checkpoint=str(resume_from) if resume_from else None
            )
        finally:
            AcceleratorState._reset_state(reset_partial_state=True)  # a later run starts afresh
        step = trainer.state.global_step
        if stop.requested and step < trainer.state.max_steps:
            raise TrainingInterrupted(
                f"stopped by {stop.signal_name or 'a signal'} at step {step}/"
                f"{trainer.state.max_steps} after saving a checkpoint under "
                f"{config.run_dir / CHECKPOINT_DIR}; continue with: bayespref dpo --config "
                f"{config.run_dir / 'config.yaml'} --resume",
                step,
            )

        # ---- finish: a plain Hugging Face model folder
        model = trainer.accelerator.unwrap_model(trainer.model)
        generator_dir = save_policy(model, generator.tokenizer, config.run_dir / GENERATOR_DIR)

    train_logs = [r for r in trainer.state.log_history if "loss" in r]
    final = {k: v for k, v in (train_logs[-1] if train_logs else {}).items() if k != "step"}
    summary = {
        "method": "dpo",
        "base_generator": generator.source,
        "pairs": str(config.pairs),
        "eval_pairs": config.eval_pairs,
        "steps": step,
        "train_pairs": len(pairs),
        "eval_pairs_count": len(eval_pairs),
        "mean_train_loss": outcome.training_loss,
        "final": final,
        "generator_dir": str(generator_dir),
    }
    (config.run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return DPOResult(config.run_dir, generator_dir, step, len(pairs), final)
