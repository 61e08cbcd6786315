"""Train a preference model: the recipe reads top to bottom in :func:`train`.

setup (seed, data, model, optimiser) -> resume -> loop (micro-batches, loss, step, evaluate,
checkpoint) -> curves. Runs on one CPU or many GPUs under ``accelerate launch``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from . import metrics as metrics_lib
from .batching import forward_in_chunks
from .checkpoint import (
    CheckpointError,
    atomic_write_dir,
    latest_checkpoint,
    load_optimizer,
    prune_checkpoints,
    save_optimizer,
    step_dir_name,
    verify_manifest,
)
from .config import DataConfig, LossConfig, TrainConfig, save_config
from .data import load_dataset
from .data.schema import AnnotatedDataset, LabelSpace
from .evaluation import (
    EncodedSplit,
    constant_predictor_metrics,
    encode_split,
    evaluate_split,
)
from .losses import LOSSES, MarginalEMA
from .model import PreferenceModel
from .safety import GracefulStop, RunLock, TrainingInterrupted

logger = logging.getLogger(__name__)


class RunExistsError(RuntimeError):
    """The run directory already holds a run and ``resume`` was not asked for."""


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient; the step was not applied."""


@dataclasses.dataclass
class TrainResult:
    run_dir: Path
    best_metrics: dict | None
    final_metrics: dict | None
    steps: int
    baseline_metrics: dict | None = None  # the constant train-mean predictor on valid


@dataclasses.dataclass
class TrainerState:
    """Everything besides weights and optimiser that a resumed run needs."""

    step: int = 0  # optimiser steps taken (a skipped non-finite step counts: its data is used)
    skipped_steps: int = 0  # non-finite steps not applied (on_nonfinite=skip)
    best_value: float | None = None
    best_step: int | None = None
    best_metrics: dict | None = None


# -- small pure pieces --------------------------------------------------------------------------


def lr_at(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Linear warmup to ``peak_lr`` over ``warmup_steps``, then linear decay to 0 at
    ``total_steps``. Counted in OPTIMISER steps (the reference code counted micro-batches while
    stepping per optimiser step, so its decay only got a fraction of the way)."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    remaining = total_steps - step
    return peak_lr * max(0.0, remaining / max(1, total_steps - warmup_steps))


def micro_batch_indices(
    micro_index: int, num_items: int, batch_size: int, world_size: int, rank: int, seed: int
) -> np.ndarray:
    """Indices of global micro-batch ``micro_index`` for process ``rank``.

    Every epoch is a fresh seeded permutation cut into global batches of
    ``batch_size * world_size`` (a partial last batch is dropped: a tiny batch would give the
    batch normaliser a noisy marginal). Random, never length-sorted: the batch normaliser must
    see an unbiased sample (METHOD section 3). Stateless, so resuming needs only the index.
    """
    global_batch = batch_size * world_size
    per_epoch = num_items // global_batch
    if per_epoch == 0:
        raise ValueError(
            f"{num_items} training items are fewer than one global batch of {global_batch}"
        )
    epoch, position = divmod(micro_index, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_items)
    start = position * global_batch + rank * batch_size
    return order[start : start + batch_size]


def global_batch_gather(accelerator):
    """``(B_local, C) -> (B_global, C)`` over all processes, differentiable; None alone.

    The batch normaliser must see the global batch (METHOD section 2). The gather's backward
    sends each shard's gradient back to the process that owns it (summed over processes), so
    with DDP's gradient averaging the update equals one process on the global batch.
    """
    if accelerator.num_processes == 1:
        return None
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    # A group of its own: the gather's backward runs a collective inside autograd while DDP's
    # bucket all-reduces run from autograd hooks; on one group their order could differ
    # between processes and mix up the data (seen with gloo).
    group = dist.new_group()

    def gather(local: Tensor) -> Tensor:
        return torch.cat(all_gather(local.contiguous(), group=group), dim=0)

    return gather


def make_objective(loss_config: LossConfig, ema: MarginalEMA | None, training: bool, gather=None):
    """``objective(logits, prior, labels) -> (B,)`` for the configured loss.

    Every registry loss takes the same options and ignores those it does not use; the EMA is
    updated only in training; ``gather`` (training under data parallelism) widens the class
    marginal to the global batch.
    """
    loss_fn = LOSSES[loss_config.name]
    options: dict = {
        "normaliser": loss_config.normaliser,
        "detach_target": loss_config.detach_target,
    }
    if gather is not None:
        options["gather"] = gather
    if loss_config.normaliser == "ema":
        options.update(ema=ema, update_ema=training)

    def objective(logits: Tensor, prior: Tensor, labels: Tensor) -> Tensor:
        return loss_fn(logits, prior, labels=labels, **options)

    return objective


def is_improvement(metric: str, value: float | None, best: float | None) -> bool:
    """Whether ``value`` beats ``best`` for the selection metric, in that metric's direction.

    No threshold: the first evaluation always makes a best checkpoint (the reference code
    saved one only when the validation loss fell below 1, which a KL objective may never do).
    ``loss`` (the training objective) is lower-is-better; the rest declare their direction.
    """
    if metric == "loss":
        if value is None or value != value:
            return False
        return best is None or best != best or value < best
    return metrics_lib.is_better(metric, value, best)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- data -------------------------------------------------------------------------------------


def load_split(data: DataConfig, spec, split: str) -> AnnotatedDataset:
    options = dict(data.options)
    if isinstance(spec, dict):
        options.update(spec)
        path = options.pop("path", None)
    else:
        path = spec
    if data.label_space is not None:
        options["label_space"] = LabelSpace.from_dict(data.label_space)
    dataset = load_dataset(data.format, path, strict=data.strict, **options)
    if dataset.report is not None:
        logger.info("%s split: %s", split, dataset.report.summary())
    if len(dataset) == 0:
        raise ValueError(f"the {split} split is empty after loading ({data.format}: {spec})")
    return dataset


def training_prior(dataset: AnnotatedDataset, data: DataConfig) -> np.ndarray | None:
    """The training split's prior when ``data.prior`` is not the count prior (None: counts)."""
    if data.prior == "dawid-skene":
        from .data.aggregation import dawid_skene_prior

        return dawid_skene_prior(dataset, data.alpha)
    return None


def load_train_valid(data: DataConfig, seed: int) -> tuple[AnnotatedDataset, AnnotatedDataset]:
    """Training and validation sets; holds out ``valid_fraction`` of train when valid is null."""
    if data.train is None and data.format != "synthetic":
        raise ValueError(f"data.train is required for format {data.format!r}")
    train_set = load_split(data, data.train if data.train is not None else {}, "train")
    rng = np.random.default_rng(seed)
    if data.valid is not None:
        valid_set = load_split(data, data.valid, "valid")
    else:
        order = rng.permutation(len(train_set))
        n_valid = max(1, int(round(data.valid_fraction * len(train_set))))
        valid_set = train_set.subset(order[:n_valid].tolist(), name=f"{train_set.name}-heldout")
        train_set = train_set.subset(order[n_valid:].tolist())
    if data.max_train_items is not None and len(train_set) > data.max_train_items:
        keep = np.sort(rng.permutation(len(train_set))[: data.max_train_items])
        train_set = train_set.subset(keep.tolist())
    if valid_set.label_space.names != train_set.label_space.names:
        raise ValueError(
            f"train and valid label spaces differ: {train_set.label_space.names} vs "
            f"{valid_set.label_space.names}"
        )
    return train_set, valid_set


# -- the recipe --------------------------------------------------------------------------------


def train(config: TrainConfig, resume: bool = False) -> TrainResult:
    """Train a preference model as configured; outputs go to ``config.run_dir``.

    With ``resume=True`` the newest intact checkpoint in the run directory is loaded and the
    run continues from it, ending with the same weights as an uninterrupted run.
    """
    from accelerate import Accelerator

    seed_everything(config.seed)
    # Under torchrun on a machine without CUDA, accelerate only sets up the (gloo) process
    # group when told to run on the CPU; alone, it picks the device itself.
    multi_process = int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        cpu=multi_process and not torch.cuda.is_available(),
    )
    lock = RunLock(config.run_dir) if accelerator.is_main_process else contextlib.nullcontext()
    with lock, GracefulStop() as stop:
        return _train(config, resume, accelerator, stop)


def _train(config: TrainConfig, resume: bool, accelerator, stop: GracefulStop) -> TrainResult:
    # ---- setup
    run_dir = config.run_dir
    ckpt_root = run_dir / "checkpoint"
    resume_from = latest_checkpoint(ckpt_root) if resume else None
    if not resume and (ckpt_root.exists() or (run_dir / "metrics.jsonl").exists()):
        raise RunExistsError(
            f"{run_dir} already holds a run: pass --resume to continue it, or choose another "
            f"name (name=...)"
        )
    accelerator.wait_for_everyone()  # every process has checked before anything is written
    if resume and resume_from is None and ckpt_root.exists():
        logger.warning("%s: no intact checkpoint to resume from; starting over", run_dir)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")

    train_set, valid_set = load_train_valid(config.data, config.seed)
    model = PreferenceModel.build(config.model, train_set.label_space, config.peft)
    train_split = encode_split(
        model, train_set, config.data.alpha, "train", prior=training_prior(train_set, config.data)
    )
    valid_split = encode_split(model, valid_set, config.data.alpha, "valid")
    if accelerator.is_main_process:
        _write_data_stats(run_dir, train_split, valid_split, train_set, valid_set)

    optim = config.optim
    world, rank = accelerator.num_processes, accelerator.process_index
    micro_per_epoch = len(train_split) // (optim.batch_size * world)
    steps_per_epoch = max(1, micro_per_epoch // optim.grad_accum)
    total_steps = optim.max_steps or max(1, math.ceil(optim.epochs * steps_per_epoch))
    warmup_steps = int(optim.warmup_ratio * total_steps)
    eval_every = config.eval_every or steps_per_epoch
    save_every = config.save_every or eval_every

    optimizer = torch.optim.AdamW(
        _param_groups(model, optim.weight_decay), lr=optim.lr, betas=tuple(optim.adam_betas)
    )
    ema = (
        MarginalEMA(train_set.num_classes, beta=config.loss.ema_beta)
        if config.loss.normaliser == "ema"
        else None
    )
    train_objective = make_objective(
        config.loss, ema, training=True, gather=global_batch_gather(accelerator)
    )
    eval_objective = make_objective(config.loss, ema, training=False)
    state = TrainerState()

    # ---- resume
    if resume_from is not None:
        state = _load_training_state(resume_from, model, optimizer, ema)
        logger.info("resumed from %s (step %d)", resume_from, state.step)
    model, optimizer = accelerator.prepare(model, optimizer)
    device = accelerator.device

    # ---- loop
    metrics_file = run_dir / "metrics.jsonl"
    if resume_from is not None and accelerator.is_main_process:
        _truncate_metrics(metrics_file, state.step)  # drop records written after the checkpoint
    progress = _progress(total_steps, state.step, config.progress and accelerator.is_main_process)
    tensorboard = (
        _tensorboard(run_dir) if config.tensorboard and accelerator.is_main_process else None
    )
    model.train()
    last_eval = None
    while state.step < total_steps:
        step_start = time.perf_counter()
        step_loss = 0.0
        ema_before = ema.state_dict() if ema is not None else None  # restored if non-finite
        for micro in range(optim.grad_accum):
            indices = micro_batch_indices(
                state.step * optim.grad_accum + micro,
                len(train_split),
                optim.batch_size,
                world,
                rank,
                config.seed,
            )
            batch = train_split.batch(indices)
            with accelerator.autocast():  # random batch, forwarded in length-sorted chunks
                logits = forward_in_chunks(model, batch, device, optim.max_padding_waste)  # (B, C)
            losses = train_objective(
                logits.float(), batch["prior"].to(device), batch["labels"].to(device)
            )  # (B,)
            loss = losses.mean() / optim.grad_accum
            accelerator.backward(loss)
            step_loss += float(loss.detach())
        max_norm = optim.max_grad_norm if optim.max_grad_norm is not None else math.inf
        grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), max_norm))
        lr = lr_at(state.step, total_steps, warmup_steps, optim.lr)
        if math.isfinite(step_loss) and math.isfinite(grad_norm):
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
        else:  # never apply a non-finite update: stop (default) or skip the batch
            if ema is not None:
                ema.load_state_dict(ema_before)
            _handle_nonfinite(config, state, train_split, optim, world, step_loss, grad_norm)
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{step_loss:.4f}")

        if accelerator.is_main_process:
            record = {"step": state.step, "split": "train", "loss": step_loss, "lr": lr}
            record["epoch"] = state.step / steps_per_epoch
            record["step_seconds"] = time.perf_counter() - step_start
            record["grad_norm"] = grad_norm
            _append_jsonl(metrics_file, record)
            if tensorboard is not None:
                _log_tensorboard(tensorboard, "train", record)

        is_last = state.step == total_steps
        if state.step % eval_every == 0 or is_last:
            last_eval, _ = evaluate_split(
                accelerator.unwrap_model(model),
                valid_split,
                batch_size=config.eval_batch_size,
                objective=eval_objective,
                objective_batch_size=optim.batch_size,
            )
            if accelerator.is_main_process:
                _append_jsonl(metrics_file, {"step": state.step, "split": "valid", **last_eval})
                if tensorboard is not None:
                    _log_tensorboard(tensorboard, "valid", {"step": state.step, **last_eval})
                progress.write(f"step {state.step}: {_short(last_eval, config.select_metric)}")
                value = last_eval.get(config.select_metric)
                if is_improvement(config.select_metric, value, state.best_value):
                    state.best_value, state.best_step = value, state.step
                    state.best_metrics = dict(last_eval)
                    _save_best(accelerator.unwrap_model(model), run_dir, state)
        stopping = _stop_requested(stop, accelerator) and not is_last
        if (state.step % save_every == 0 or is_last or stopping) and accelerator.is_main_process:
            _save_training_state(
                ckpt_root, accelerator.unwrap_model(model), optimizer, ema, state, config
            )
        accelerator.wait_for_everyone()
        if stopping:
            progress.close()
            raise TrainingInterrupted(
                f"stopped by {stop.signal_name or 'a signal'} at step {state.step}/{total_steps} "
                f"after saving {ckpt_root / step_dir_name(state.step)}; continue with: "
                f"bayespref train --config {run_dir / 'config.yaml'} --resume",
                state.step,
            )
    progress.close()
    if tensorboard is not None:
        tensorboard.close()

    # ---- finish
    baseline = constant_predictor_metrics(train_split.empirical, valid_split)
    if accelerator.is_main_process:
        plot_curves(metrics_file, run_dir / "curves.png", config.loss.name, config.select_metric)
        summary = {
            "best_step": state.best_step,
            "select_metric": config.select_metric,
            "best": state.best_metrics,
            "final": last_eval,
            "train_mean_predictor": baseline,
            "steps": state.step,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return TrainResult(run_dir, state.best_metrics, last_eval, state.step, baseline)


# -- helpers ----------------------------------------------------------------------------------


def _stop_requested(stop: GracefulStop, accelerator) -> bool:
    """A signal on any process stops every process at the same step."""
    if accelerator.num_processes == 1:
        return stop.requested
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=accelerator.device)
    return bool(accelerator.gather(flag).max() > 0)


def _handle_nonfinite(config, state, split: EncodedSplit, optim, world, loss, grad_norm) -> None:
    ids = [
        split.ids[i]
        for micro in range(state.step * optim.grad_accum, (state.step + 1) * optim.grad_accum)
        for rank in range(world)
        for i in micro_batch_indices(micro, len(split), optim.batch_size, world, rank, config.seed)
    ]
    record = {"step": state.step + 1, "loss": loss, "grad_norm": grad_norm, "ids": ids}
    _append_jsonl(config.run_dir / "nonfinite.jsonl", record)
    what = f"loss {loss}, gradient norm {grad_norm}"
    if config.on_nonfinite == "skip":
        state.skipped_steps += 1
        logger.warning(
            "non-finite step %d skipped (%s; %d skipped so far); batch ids in %s",
            state.step + 1,
            what,
            state.skipped_steps,
            config.run_dir / "nonfinite.jsonl",
        )
        return
    raise NonFiniteError(
        f"non-finite values at step {state.step + 1} ({what}); the step was not applied and the "
        f"last good checkpoint is kept. The batch's item ids are in "
        f"{config.run_dir / 'nonfinite.jsonl'}. Set on_nonfinite=skip to skip such batches."
    )


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (1-D parameters)."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:  # tensorboard is an optional extra
        raise RuntimeError("tensorboard=true needs `pip install tensorboard`") from err
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _log_tensorboard(writer, split: str, record: dict) -> None:
    for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)) and value == value:
            writer.add_scalar(f"{split}/{key}", value, record["step"])


def _short(results: dict, select_metric: str) -> str:
    keys = ["loss", select_metric, "soft_ce", "accuracy"]
    seen = []
    for k in keys:
        if k in results and k not in seen:
            seen.append(k)
    return ", ".join(f"{k}={results[k]:.4f}" for k in seen)


def _append_jsonl(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, last_step: int) -> None:
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in kept if json.loads(line)["step"] <= last_step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def _write_data_stats(run_dir, train_split: EncodedSplit, valid_split, train_set, valid_set):
    stats = {
        "label_space": train_set.label_space.to_dict(),
        "train_items": len(train_split),
        "valid_items": len(valid_split),
        "train_mean_distribution": train_split.empirical.mean(axis=0).tolist(),
        "train_load": train_set.report.to_dict() if train_set.report else None,
        "valid_load": valid_set.report.to_dict() if valid_set.report else None,
    }
    (run_dir / "data_stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")


def _save_best(model: PreferenceModel, run_dir: Path, state: TrainerState) -> None:
    def write(folder: Path) -> None:
        model.save(folder)
        (folder / "metrics.json").write_text(
            json.dumps({"step": state.best_step, **(state.best_metrics or {})}, indent=2),
            encoding="utf-8",
        )

    atomic_write_dir(run_dir / "checkpoint" / "best", write)


def _save_training_state(ckpt_root, model, optimizer, ema, state: TrainerState, config) -> None:
    def write(folder: Path) -> None:
        model.save(folder / "model")
        save_optimizer(optimizer, folder)
        save_file({"torch": torch.get_rng_state()}, str(folder / "rng.safetensors"))
        np_state = np.random.get_state()
        payload = {
            "trainer": dataclasses.asdict(state),
            "ema": ema.state_dict() if ema is not None else None,
            "python_rng": _jsonable(random.getstate()),
            "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        if payload["ema"] is not None:
            payload["ema"] = _jsonable(payload["ema"])
        (folder / "trainer_state.json").write_text(json.dumps(payload), encoding="utf-8")

    try:
        atomic_write_dir(ckpt_root / step_dir_name(state.step), write)
    except OSError as err:
        previous = latest_checkpoint(ckpt_root, verify=False)
        raise CheckpointError(
            f"could not write the checkpoint of step {state.step} ({err}); "
            f"{'the previous checkpoint ' + str(previous) + ' is intact' if previous else 'no earlier checkpoint exists'}. "
            f"Free space (or fix the error) and continue with --resume."
        ) from err
    prune_checkpoints(ckpt_root, config.keep_last)


def _load_training_state(folder: Path, model, optimizer, ema) -> TrainerState:
    verify_manifest(folder)
    model.load_weights(folder / "model" / "model.safetensors")
    load_optimizer(optimizer, folder)
    torch.set_rng_state(load_file(str(folder / "rng.safetensors"))["torch"])
    payload = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    random.setstate(_tupled(payload["python_rng"]))
    np_state = payload["numpy_rng"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    if ema is not None and payload["ema"] is not None:
        ema.load_state_dict(_from_jsonable(payload["ema"]))
    return TrainerState(**payload["trainer"])


def _jsonable(value):
    if torch.is_tensor(value):
        return {"__tensor__": value.tolist(), "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _from_jsonable(value):
    if isinstance(value, dict) and "__tensor__" in value:
        return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
    if isinstance(value, dict):
        return {k: _from_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_jsonable(v) for v in value]
    return value


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def plot_curves(metrics_file: Path, out: Path, loss_name: str, select_metric: str) -> None:
    """Training/validation objective and the selection metric against optimiser steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_file.read_text(encoding="utf-8").splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    valid_rows = [r for r in rows if r["split"] == "valid"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    if train_rows:
        steps = np.array([r["step"] for r in train_rows])
        losses = np.array([r["loss"] for r in train_rows])
        window = max(1, len(losses) // 25)
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps, losses, color="C0", alpha=0.25, lw=0.8)
        ax.plot(steps[window - 1 :], smooth, color="C0", label="train (smoothed)")
    if valid_rows and "loss" in valid_rows[0]:
        ax.plot(
            [r["step"] for r in valid_rows],
            [r["loss"] for r in valid_rows],
            "o-",
            color="C1",
            label="valid (same batch size)",
        )
    ax.set(xlabel="optimiser step", ylabel=f"{loss_name} objective", title="objective")
    ax.legend()
    ax = axes[1]
    shown = [select_metric] + [m for m in ("soft_ce", "jsd") if m != select_metric]
    for i, name in enumerate(shown):
        if valid_rows and name in valid_rows[0]:
            spec = metrics_lib.METRICS.get(name)
            arrow = (
                ""
                if spec is None or spec.higher_is_better is None
                else (" (higher is better)" if spec.higher_is_better else " (lower is better)")
            )
            ax.plot(
                [r["step"] for r in valid_rows],
                [r[name] for r in valid_rows],
                "o-",
                color=f"C{i + 2}",
                label=name + arrow,
            )
    if valid_rows and "entropy_floor" in valid_rows[0]:
        ax.axhline(valid_rows[0]["entropy_floor"], ls="--", color="gray", label="H(t) floor")
    ax.set(xlabel="optimiser step", title="validation metrics")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
