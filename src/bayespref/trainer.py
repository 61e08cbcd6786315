"""The one training core: both recipes (preference model, generator calibration) run on it.

A recipe builds its model, its data and its loss, and hands the trainer a :class:`Task`: how
to run one micro-batch forward and backward, how to evaluate, how to save and load the
weights it trains. The trainer owns everything else, once:

- the run directory: the lock, the refusal to overwrite a run, ``config.yaml``;
- step arithmetic (epochs -> optimiser steps, accumulation, data-parallel shards) and the
  seeded random micro-batches (:func:`micro_batch_indices`);
- AdamW with linear warmup and decay counted in optimiser steps (:func:`lr_at`), clipping;
- the non-finite policy: a non-finite loss or gradient is never applied; ``stop`` raises
  :class:`NonFiniteError` with the last good checkpoint kept, ``skip`` drops the step and
  counts it; either way the batch's item ids go to ``nonfinite.jsonl``;
- ``metrics.jsonl`` (one line per optimiser step and per evaluation), TensorBoard on request;
- periodic evaluation and best-checkpoint selection in the metric's own direction;
- atomic checkpoints with the full training state (weights, optimiser, RNG, trainer and task
  state) and exact resume; a failed save keeps the previous checkpoint;
- a graceful stop on SIGINT/SIGTERM: save, then :class:`TrainingInterrupted`.

Use: ``with Trainer(config, config.optim, accelerator, resume) as trainer:`` the recipe's own
setup (data, model, task), then ``outcome = trainer.fit(model, task)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import (
    CheckpointError,
    atomic_write_dir,
    from_jsonable,
    latest_checkpoint,
    load_optimizer,
    prune_checkpoints,
    rng_state,
    save_optimizer,
    set_rng_state,
    step_dir_name,
    to_jsonable,
    verify_manifest,
)
from .config import ConfigError, OptimConfig, RunConfig, save_config
from .safety import (
    GracefulStop,
    NonFiniteError,
    NothingToResumeError,
    RunExistsError,
    RunLock,
    TrainingInterrupted,
)
from .trainer_utils import (
    append_jsonl,
    is_improvement,
    log_tensorboard,
    lr_at,
    micro_batch_indices,
    param_groups,
    read_jsonl,
    truncate_metrics,
)

logger = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"
NONFINITE_FILE = "nonfinite.jsonl"


@dataclasses.dataclass
class TrainerState:
    """Everything besides weights and optimiser that a resumed run needs."""

    step: int = 0  # optimiser steps taken (a skipped non-finite step counts: its data is used)
    skipped_steps: int = 0  # non-finite steps not applied (on_nonfinite=skip)
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict | None = None


@dataclasses.dataclass
class FitOutcome:
    """What :meth:`Trainer.fit` leaves the recipe to report."""

    state: TrainerState
    total_steps: int
    steps_per_epoch: int
    last_eval: dict | None  # the evaluation at the last step (also when resumed at the end)
    initial_eval: dict | None  # the evaluation before training (evaluate_at_start; recorded)
    resumed_from: Path | None


# -- the recipe's side -------------------------------------------------------------------------


Backward = Callable[[Tensor], None]


class Task(Protocol):
    """What a recipe hands the trainer. ``num_items`` is the size of an epoch."""

    num_items: int
    eval_split: str  # the ``split`` of evaluation records in metrics.jsonl ("valid", "eval")
    headline_metrics: tuple[str, ...]  # shown in the progress line after an evaluation

    def forward_backward(
        self, model: Any, micro_batches: list[np.ndarray], backward: Backward
    ) -> dict[str, float]:
        """Forward and backward the micro-batches of one optimiser step (each a seeded random
        sample of item indices); the gradient is that of the mean over micro-batches of each
        micro-batch's mean loss. How the work is grouped is the task's (one micro-batch at a
        time, or pooled). Returns the logged terms of the step (``"loss"`` among them)."""
        ...

    def evaluate(self, model: Any) -> dict[str, float] | None:
        """Held-out metrics (None: nothing to evaluate)."""
        ...

    def item_ids(self, indices: np.ndarray) -> list:
        """The ids of the items at ``indices`` (recorded for a non-finite step)."""
        ...

    def save_weights(self, model: Any, folder: Path) -> None:
        """Write the trained weights into a checkpoint folder."""
        ...

    def load_weights(self, model: Any, folder: Path) -> None:
        """Read the weights :meth:`save_weights` wrote."""
        ...

    def save_best(self, model: Any, folder: Path) -> None:
        """Write the selected model (only called when the trainer selects a best)."""
        ...

    def state_dict(self) -> dict | None:
        """Task state besides weights (e.g. a running class marginal), JSON-able via
        :func:`to_jsonable`; restored on resume and after a skipped non-finite step."""
        ...

    def load_state_dict(self, state: dict | None) -> None: ...


# -- the trainer --------------------------------------------------------------------------------


class Trainer:
    """The training loop of every recipe; a context manager that holds the run directory.

    ``command`` is how a user continues the run (printed when it stops on a signal).
    ``select_metric`` (None: no best model) picks the best evaluation in its own direction.
    ``evaluate_at_start`` records an evaluation at step 0 of a fresh run.
    """

    def __init__(
        self,
        config: RunConfig,
        optim: OptimConfig,
        accelerator: Any,
        resume: bool = False,
        command: str = "bayespref train",
        select_metric: str | None = None,
        evaluate_at_start: bool = False,
    ):
        self.config = config
        self.optim = optim
        self.accelerator = accelerator
        self.resume = resume
        self.command = command
        self.select_metric = select_metric
        self.evaluate_at_start = evaluate_at_start
        self.run_dir = config.run_dir
        self.ckpt_root = self.run_dir / "checkpoint"
        self.metrics_file = self.run_dir / METRICS_FILE
        self.is_main = bool(accelerator.is_main_process)
        self.resume_from: Path | None = None
        self._exit_stack = contextlib.ExitStack()
        self.stop: GracefulStop | None = None
        self._task: Any = None  # the task being fitted

    # ---- the run directory

    def __enter__(self) -> Trainer:
        if self.is_main:
            self._exit_stack.enter_context(RunLock(self.run_dir))
        self.stop = self._exit_stack.enter_context(GracefulStop())
        try:
            self._claim_run_dir()
        except BaseException:
            self._exit_stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._exit_stack.close()

    def _claim_run_dir(self) -> None:
        run_dir = self.run_dir
        holds_run = self.ckpt_root.exists() or self.metrics_file.exists()
        if self.resume and not holds_run:
            raise NothingToResumeError(
                f"{run_dir} holds no run to resume (no checkpoint, no {METRICS_FILE}); "
                f"start it without --resume"
            )
        if not self.resume and holds_run:
            raise RunExistsError(
                f"{run_dir} already holds a run: pass --resume to continue it, or choose another "
                f"name (name=...)"
            )
        self.resume_from = latest_checkpoint(self.ckpt_root) if self.resume else None
        self.accelerator.wait_for_everyone()  # every process has checked before any write
        if self.resume and self.resume_from is None:
            logger.warning(
                "%s: no intact checkpoint to resume from; starting over (its earlier records "
                "are dropped from %s)",
                run_dir,
                METRICS_FILE,
            )
        if self.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, run_dir / "config.yaml")
            if self.resume:  # records after the checkpoint (or all, when starting over) go
                truncate_metrics(self.metrics_file, self._resume_step())

    def _resume_step(self) -> int:
        if self.resume_from is None:
            return -1  # starting over: no earlier record is kept (step 0's evaluation neither)
        payload = json.loads((self.resume_from / TRAINER_STATE).read_text(encoding="utf-8"))
        return int(payload["trainer"]["step"])

    # ---- the loop

    def fit(self, model: torch.nn.Module, task: Task) -> FitOutcome:
        """Train ``model`` on ``task`` to the configured number of optimiser steps."""
        optim, accelerator, config = self.optim, self.accelerator, self.config
        self._task = task
        world, rank = accelerator.num_processes, accelerator.process_index
        micro_per_epoch = task.num_items // (optim.batch_size * world)
        if micro_per_epoch == 0:
            raise ConfigError(
                f"{task.num_items} training items are fewer than one global batch of "
                f"{optim.batch_size * world} (optim.batch_size x processes): lower "
                f"optim.batch_size or add data"
            )
        steps_per_epoch = max(1, micro_per_epoch // optim.grad_accum)
        if (spans := optim.grad_accum / micro_per_epoch) > 1:  # grad_accum=1000 on 40 items
            logger.warning("one optimiser step spans %.1f epochs: lower optim.grad_accum", spans)
        total_steps = optim.max_steps or max(1, math.ceil(optim.epochs * steps_per_epoch))
        warmup_steps = int(optim.warmup_ratio * total_steps)
        eval_every = config.eval_every or steps_per_epoch
        save_every = config.save_every or eval_every

        head_lr = getattr(optim, "head_lr", None)  # the encoder recipes' head learning rate
        groups = param_groups(model, optim.weight_decay, head_lr and head_lr / optim.lr)
        optimizer = torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.adam_betas))
        state = TrainerState()
        initial_eval = self._recorded_eval(0) if self.evaluate_at_start else None  # kept on resume
        if self.resume_from is not None:
            state = self._load_checkpoint(self.resume_from, model, optimizer, task)
            logger.info("resumed from %s (step %d)", self.resume_from, state.step)
        elif self.evaluate_at_start:
            initial_eval = task.evaluate(model)
            self._record_eval(0, initial_eval)
        model, optimizer = accelerator.prepare(model, optimizer)

        progress = tqdm(
            total=total_steps,
            initial=state.step,
            disable=not (config.progress and self.is_main),
            desc=self.command.split()[-1],
            unit="step",
        )
        tensorboard = self._tensorboard() if config.tensorboard and self.is_main else None
        model.train()
        last_eval = self._recorded_eval(state.step) if state.step >= total_steps else None
        while state.step < total_steps:
            step_start = time.perf_counter()
            task_state_before = task.state_dict()  # restored if the step is not applied
            micro_batches = [
                micro_batch_indices(
                    state.step * optim.grad_accum + micro,
                    task.num_items,
                    optim.batch_size,
                    world,
                    rank,
                    config.seed,
                )
                for micro in range(optim.grad_accum)
            ]
            logged = task.forward_backward(model, micro_batches, accelerator.backward)
            max_norm = optim.max_grad_norm if optim.max_grad_norm is not None else math.inf
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_norm))
            lr = lr_at(state.step, total_steps, warmup_steps, optim.lr)
            if math.isfinite(logged["loss"]) and math.isfinite(grad_norm):
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                optimizer.step()
            else:  # never apply a non-finite update: stop (default) or skip the batch
                task.load_state_dict(task_state_before)
                self._handle_nonfinite(task, state, world, logged["loss"], grad_norm)
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            progress.update(1)
            progress.set_postfix(loss=f"{logged['loss']:.4f}")

            if self.is_main:
                record = {"step": state.step, "split": "train", **logged, "lr": lr}
                record["epoch"] = state.step / steps_per_epoch
                record["step_seconds"] = time.perf_counter() - step_start
                record["grad_norm"] = grad_norm
                append_jsonl(self.metrics_file, record)
                if tensorboard is not None:
                    log_tensorboard(tensorboard, "train", record)

            is_last = state.step == total_steps
            if state.step % eval_every == 0 or is_last:
                last_eval = task.evaluate(accelerator.unwrap_model(model))
                self._record_eval(state.step, last_eval, progress, tensorboard)
                self._select(state, last_eval, accelerator.unwrap_model(model), task)
            stopping = self._stop_requested() and not is_last
            if (state.step % save_every == 0 or is_last or stopping) and self.is_main:
                self._save_checkpoint(accelerator.unwrap_model(model), optimizer, task, state)
            accelerator.wait_for_everyone()
            if stopping:
                progress.close()
                assert self.stop is not None
                raise TrainingInterrupted(
                    f"stopped by {self.stop.signal_name or 'a signal'} at step "
                    f"{state.step}/{total_steps} after saving "
                    f"{self.ckpt_root / step_dir_name(state.step)}; continue with: "
                    f"{self.command} --config {self.run_dir / 'config.yaml'} --resume",
                    state.step,
                )
        progress.close()
        if tensorboard is not None:
            tensorboard.close()
        return FitOutcome(
            state, total_steps, steps_per_epoch, last_eval, initial_eval, self.resume_from
        )

    # ---- evaluation and selection

    def _record_eval(
        self, step: int, results: dict | None, progress: Any = None, tensorboard: Any = None
    ) -> None:
        if results is None or not self.is_main:
            return
        record = {"step": step, "split": self._task.eval_split, **results}
        append_jsonl(self.metrics_file, record)
        if tensorboard is not None:
            log_tensorboard(tensorboard, self._task.eval_split, record)
        names = dict.fromkeys(self._task.headline_metrics)  # ordered, without repeats
        shown = ", ".join(f"{k}={results[k]:.4f}" for k in names if k in results)
        message = f"step {step}: {shown}"
        if progress is not None:
            progress.write(message)
        else:
            logger.info(message)

    def _recorded_eval(self, step: int) -> dict | None:
        """The evaluation recorded at ``step`` (a run resumed after its last step)."""
        for record in reversed(read_jsonl(self.metrics_file)):
            if record["step"] == step and record["split"] != "train":
                return {k: v for k, v in record.items() if k not in ("step", "split")}
        return None

    def _select(self, state: TrainerState, results: dict | None, model, task: Task) -> None:
        if self.select_metric is None or results is None or not self.is_main:
            return
        value = results.get(self.select_metric)
        if not is_improvement(self.select_metric, value, state.best_value):
            return
        state.best_value, state.best_step = value, state.step
        state.best_metrics = dict(results)

        best_metrics = state.best_metrics

        def write(folder: Path) -> None:
            task.save_best(model, folder)
            (folder / "metrics.json").write_text(
                json.dumps({"step": state.best_step, **best_metrics}, indent=2),
                encoding="utf-8",
            )

        best = self.ckpt_root / "best"
        try:
            atomic_write_dir(best, write)
        except (OSError, SafetensorError) as err:
            raise CheckpointError(
                f"could not write the best model of step {state.step} to {best} ({err}); "
                f"{_previous_text(best if (best / 'metrics.json').is_file() else None)}. "
                f"Free space (or fix the error) and continue with --resume."
            ) from err

    # ---- failures and signals

    def _stop_requested(self) -> bool:
        """A signal on any process stops every process at the same step."""
        assert self.stop is not None
        if self.accelerator.num_processes == 1:
            return self.stop.requested
        flag = torch.tensor([1.0 if self.stop.requested else 0.0], device=self.accelerator.device)
        return bool(self.accelerator.gather(flag).max() > 0)

    def _handle_nonfinite(self, task: Task, state: TrainerState, world: int, loss, grad_norm):
        optim, seed = self.optim, self.config.seed
        ids = [
            task.item_ids(micro_batch_indices(m, task.num_items, optim.batch_size, world, r, seed))
            for m in range(state.step * optim.grad_accum, (state.step + 1) * optim.grad_accum)
            for r in range(world)
        ]
        record = {
            "step": state.step + 1,
            "loss": loss,
            "grad_norm": grad_norm,
            "ids": [i for batch in ids for i in batch],
        }
        nonfinite_file = self.run_dir / NONFINITE_FILE
        if self.is_main:
            append_jsonl(nonfinite_file, record)
        what = f"loss {loss}, gradient norm {grad_norm}"
        if self.config.on_nonfinite == "skip":
            state.skipped_steps += 1
            logger.warning(
                "non-finite step %d skipped (%s; %d skipped so far); batch ids in %s",
                state.step + 1,
                what,
                state.skipped_steps,
                nonfinite_file,
            )
            return
        raise NonFiniteError(
            f"non-finite values at step {state.step + 1} ({what}); the step was not applied and "
            f"the last good checkpoint is kept. The batch's item ids are in {nonfinite_file}. "
            f"Set on_nonfinite=skip to skip such batches."
        )

    # ---- checkpoints

    def _save_checkpoint(self, model, optimizer, task: Task, state: TrainerState) -> None:
        def write(folder: Path) -> None:
            task.save_weights(model, folder)
            save_optimizer(optimizer, folder)
            save_file({"torch": torch.get_rng_state()}, str(folder / "rng.safetensors"))
            payload = {
                "trainer": dataclasses.asdict(state),
                "task": to_jsonable(task.state_dict()),
                **rng_state(),
            }
            (folder / TRAINER_STATE).write_text(json.dumps(payload), encoding="utf-8")

        try:
            atomic_write_dir(self.ckpt_root / step_dir_name(state.step), write)
        except (OSError, SafetensorError) as err:
            previous = latest_checkpoint(self.ckpt_root)
            raise CheckpointError(
                f"could not write the checkpoint of step {state.step} ({err}); "
                f"{_previous_text(previous)}. Free space (or fix the error) and continue with "
                f"--resume."
            ) from err
        prune_checkpoints(self.ckpt_root, self.config.keep_last)

    def _load_checkpoint(self, folder: Path, model, optimizer, task: Task) -> TrainerState:
        verify_manifest(folder)
        task.load_weights(model, folder)
        load_optimizer(optimizer, folder)
        torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
        payload = json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
        set_rng_state(payload)
        task.load_state_dict(from_jsonable(payload["task"]))
        return TrainerState(**payload["trainer"])

    def _tensorboard(self) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # tensorboard is an optional extra
            raise RuntimeError("tensorboard=true needs `pip install tensorboard`") from err
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))


def _previous_text(previous: Path | None) -> str:
    if previous is None:
        return "no earlier checkpoint exists"
    return f"the previous checkpoint {previous} is intact (its checksums verify)"
