"""Loss study: every loss on every data set over several seeds, cached, with a report.

A study is a grid of *cells*. Each cell is one ordinary training run (``bayespref.train``),
named deterministically ``<output_dir>/<study>/<dataset>/<row>/seed<k>`` where a *row* is a
loss plus an optional *variant* (a named set of config overrides, e.g. ``detached`` =
``loss.detach_target=true``). The recipe, in :func:`run_study`:

1. build the cells from the :class:`StudyConfig`;
2. train each cell unless it has finished: a cell whose ``summary.json`` exists and whose saved
   ``config.yaml`` equals the cell's config is skipped; a cell with a run directory but no
   summary (interrupted) is continued with ``train(config, resume=True)``; a cell whose saved
   config differs is an error (delete it or rename the study);
3. evaluate each cell's best checkpoint on the data set's test split, raw and after post-hoc
   temperature scaling fitted on the run's held-out (validation) split; the result is cached
   in ``<cell>/study_eval.json`` keyed by the checkpoint and test set;
4. aggregate over seeds (mean and 95% t-interval), draw the plots and write ``report.md``.

``report_only=True`` skips step 2 and uses whatever cells have finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import metrics as metrics_lib
from .config import ConfigError, TrainConfig, _field, apply_overrides, from_dict, load_config
from .config import to_dict as config_to_dict
from .stats import t_interval

logger = logging.getLogger(__name__)

EVAL_FILE = "study_eval.json"
# Config keys that do not change what a run computes (ignored when matching a cached cell).
_COSMETIC_KEYS = ("progress", "tensorboard")


class StudyError(RuntimeError):
    """A study that cannot run as configured (e.g. a cached cell with a different config)."""


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class DatasetSpec:
    name: str = _field("dataset", "folder name of the data set in the study")
    config: str = _field("configs/synthetic.yaml", "training config file of this data set")
    overrides: list = _field([], "key=value overrides of that config (e.g. data.valid=null)")
    test: str | dict | None = _field(
        None, "test split: a file path or a dict of loader options (same forms as data.train)"
    )
    max_test_items: int | None = _field(None, "seeded subsample of the test split (same for all)")

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ConfigError(f"datasets[].name must be a plain folder name, got {self.name!r}")
        if self.test is None:
            raise ConfigError(f"datasets[{self.name}].test is required (the test split)")


@dataclasses.dataclass
class VariantSpec:
    name: str = _field("variant", "variant name, used in row names: <loss>+<variant>")
    overrides: list = _field([], "key=value overrides this variant applies")

    def __post_init__(self):
        if not self.name or "/" in self.name or "+" in self.name:
            raise ConfigError(f"variants[].name must be plain (no / or +), got {self.name!r}")


@dataclasses.dataclass
class RowSpec:
    loss: str = _field("forward-kl", "loss name (bayespref.losses.LOSSES)")
    variant: str | None = _field(None, "variant name (null: the loss as configured)")
    datasets: list | None = _field(None, "data sets this row runs on (null: all)")
    seeds: list | None = _field(None, "seeds of this row (null: the study's seeds)")

    @property
    def name(self) -> str:
        return self.loss if self.variant is None else f"{self.loss}+{self.variant}"


@dataclasses.dataclass
class BatchSweepSpec:
    loss: str = _field("forward-kl", "d-PM loss whose normaliser is compared")
    batch_sizes: list = _field([4, 8, 16, 32, 64], "training batch sizes")
    normalisers: list = _field(["batch", "ema"], "loss.normaliser values compared")
    datasets: list | None = _field(None, "data sets of the sweep (null: all)")
    seeds: list | None = _field(None, "seeds of the sweep (null: the study's seeds)")


@dataclasses.dataclass
class StudyConfig:
    name: str = _field("study", "study name: cells go to <output_dir>/<name>/")
    output_dir: str = _field("runs", "parent folder of the study")
    seeds: list = _field([0, 1, 2], "seeds of every cell (at least 2 for an interval)")
    losses: list = _field(
        ["forward-kl", "reverse-kl", "jsd", "soft", "majority"], "plain rows: each loss as is"
    )
    rows: list = _field([], "extra rows: [{loss, variant, datasets, seeds}]")
    variants: list = _field([], "named override sets: [{name, overrides: [key=value, ...]}]")
    datasets: list = _field([], "[{name, config, overrides, test, max_test_items}]")
    overrides: list = _field([], "key=value overrides applied to every cell (after the data set's)")
    batch_sweep: dict | None = _field(
        None, "batch-size sensitivity: {loss, batch_sizes, normalisers, datasets, seeds}"
    )
    eval_batch_size: int = _field(64, "batch size of the test and held-out forward passes")
    quick: dict | str | None = _field(
        None, "--quick: keys replacing the ones above, or the path of a whole quick study file"
    )

    def __post_init__(self):
        self.datasets = [
            d if isinstance(d, DatasetSpec) else from_dict(DatasetSpec, d, "datasets[]")
            for d in self.datasets
        ]
        self.variants = [
            v if isinstance(v, VariantSpec) else from_dict(VariantSpec, v, "variants[]")
            for v in self.variants
        ]
        self.rows = [
            r if isinstance(r, RowSpec) else from_dict(RowSpec, r, "rows[]") for r in self.rows
        ]
        if isinstance(self.batch_sweep, dict):
            self.batch_sweep = from_dict(BatchSweepSpec, self.batch_sweep, "batch_sweep")
        if not self.datasets:
            raise ConfigError("a study needs at least one entry in datasets")
        if not self.seeds:
            raise ConfigError("a study needs at least one seed")
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"datasets[].name must be unique, got {names}")
        known = {v.name for v in self.variants}
        for row in self.rows:
            if row.variant is not None and row.variant not in known:
                raise ConfigError(
                    f"rows: unknown variant {row.variant!r}; variants: {sorted(known)}"
                )
            for d in row.datasets or []:
                if d not in names:
                    raise ConfigError(f"rows: unknown dataset {d!r}; datasets: {names}")
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a plain folder name, got {self.name!r}")

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_study(
    path: str | Path, quick: bool = False, overrides: list[str] | None = None
) -> StudyConfig:
    """Read a study YAML. ``quick`` applies its ``quick`` section (a mapping of replaced keys,
    or a path to a whole study file); ``overrides`` are dotted ``key=value`` study keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    if quick:
        section = data.get("quick")
        if section is None:
            raise ConfigError(f"{path} has no quick section")
        if isinstance(section, str):  # a study file, relative to this one (else to the cwd)
            quick_path = path.parent / section
            quick_path = quick_path if quick_path.is_file() else Path(section)
            if not quick_path.is_file():
                raise ConfigError(f"{path}: quick study file not found: {section}")
            data = yaml.safe_load(quick_path.read_text(encoding="utf-8")) or {}
        else:
            data = {**data, **section}
    data.pop("quick", None)
    data = apply_overrides(data, overrides or [])
    return from_dict(StudyConfig, data)


# ---------------------------------------------------------------------------------------------
# Cells


@dataclasses.dataclass
class Cell:
    dataset: DatasetSpec
    row: str
    seed: int
    overrides: list[str]  # the full override list applied to dataset.config
    group: str = "main"  # main | sweep (the batch sweep has its own table and plot)
    loss: str = ""
    batch_size: int | None = None
    normaliser: str | None = None

    def config(self, study: StudyConfig | None = None) -> TrainConfig:
        return load_config(self.dataset.config, self.overrides)

    @property
    def key(self) -> str:
        return f"{self.dataset.name}/{self.row}/seed{self.seed}"


def build_cells(study: StudyConfig, train_overrides: list[str] | None = None) -> list[Cell]:
    """Every cell of the grid, in a fixed order (data set, row, seed).

    A cell's overrides, later ones winning: the data set's, the study's, the row's (loss name
    and variant, or the sweep's batch size and normaliser), ``train_overrides``, then seed and
    run directory.
    """
    cells: list[Cell] = []
    for dataset in study.datasets:
        for template, extra, seeds in _row_templates(study, dataset.name):
            run_dir = study.study_dir / dataset.name / template.row
            for seed in seeds or study.seeds:
                overrides = [
                    *dataset.overrides,
                    *study.overrides,
                    *extra,
                    *(train_overrides or []),
                    f"seed={seed}",
                    f"name=seed{seed}",
                    f"output_dir={run_dir}",
                ]
                cells.append(
                    dataclasses.replace(
                        template, dataset=dataset, seed=int(seed), overrides=overrides
                    )
                )
    return cells


def _row_templates(study: StudyConfig, dataset: str) -> list[tuple[Cell, list[str], list | None]]:
    """(cell template, the row's overrides, the row's seeds) for each row run on ``dataset``."""
    variants = {v.name: v for v in study.variants}
    blank = DatasetSpec(name=dataset, test="")
    out: dict[str, tuple[Cell, list[str], list | None]] = {}
    for row in [RowSpec(loss=loss) for loss in study.losses] + list(study.rows):
        if row.datasets is not None and dataset not in row.datasets:
            continue
        extra = [f"loss.name={row.loss}", *(variants[row.variant].overrides if row.variant else [])]
        cell = Cell(blank, row.name, 0, [], "main", row.loss)
        out.setdefault(row.name, (cell, extra, row.seeds))
    sweep = study.batch_sweep
    if sweep is not None and (sweep.datasets is None or dataset in sweep.datasets):
        for normaliser in sweep.normalisers:
            for size in sweep.batch_sizes:
                name = f"{sweep.loss}+{normaliser}-bs{size}"
                extra = [
                    f"loss.name={sweep.loss}",
                    f"loss.normaliser={normaliser}",
                    f"optim.batch_size={size}",
                ]
                cell = Cell(blank, name, 0, [], "sweep", sweep.loss, int(size), normaliser)
                out.setdefault(name, (cell, extra, sweep.seeds))
    return list(out.values())


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _COSMETIC_KEYS}


def run_status(config, finished: tuple[str, ...] = ("summary.json",), what: str = "run") -> str:
    """``new`` (nothing there), ``partial`` (interrupted: resume) or ``done`` (every path in
    ``finished`` exists) for a run whose directory holds its resolved ``config.yaml``.

    Raises :class:`StudyError` when the directory holds a run of a different config; keys that
    do not change what a run computes (progress bars, TensorBoard) are ignored.
    """
    run_dir = config.run_dir
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return "new"
    saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) or {}
    wanted = yaml.safe_load(yaml.safe_dump(config_to_dict(config)))
    if _comparable(saved) != _comparable(wanted):
        diff = sorted(_diff_keys(_comparable(saved), _comparable(wanted)))
        raise StudyError(
            f"{run_dir} holds a {what} of a different config (keys {diff}); delete that folder "
            "to rerun it, or give the study another name"
        )
    return "done" if all((run_dir / f).exists() for f in finished) else "partial"


def cell_status(cell: Cell, config: TrainConfig) -> str:
    """:func:`run_status` of a study cell's training run."""
    return run_status(config)


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def run_cells(cells: list[Cell], study: StudyConfig, progress: bool = True) -> dict[str, int]:
    """Train every unfinished cell (resuming interrupted ones); returns counts by outcome."""
    from tqdm.auto import tqdm

    from .safety import TrainingInterrupted
    from .train import train

    outcome = {"cached": 0, "trained": 0, "resumed": 0}
    bar = tqdm(cells, desc="study cells", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.key)
        config = cell.config(study)
        status = cell_status(cell, config)
        if status == "done":
            outcome["cached"] += 1
            continue
        logger.info("cell %s: %s", cell.key, "resuming" if status == "partial" else "training")
        try:
            train(config, resume=status == "partial")
        except TrainingInterrupted as err:
            bar.close()
            raise TrainingInterrupted(
                f"study interrupted in cell {cell.key} at step {err.step} (checkpoint saved); "
                "rerun the same `bayespref compare` command to resume the study",
                err.step,
            ) from err
        outcome["resumed" if status == "partial" else "trained"] += 1
    bar.close()
    return outcome


# ---------------------------------------------------------------------------------------------
# Temperature scaling and intervals


def soft_ce_of_logits(logits: np.ndarray | torch.Tensor, targets: np.ndarray, temperature=1.0):
    """Mean soft cross-entropy ``-sum_l t log softmax(z / T)`` over items (float)."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64) / float(temperature)
    log_q = torch.log_softmax(z, dim=-1)  # (N, C)
    return float(-(torch.as_tensor(targets, dtype=torch.float64) * log_q).sum(-1).mean())


def fit_temperature(
    logits: np.ndarray | torch.Tensor,
    targets: np.ndarray,
    bounds: tuple[float, float] = (0.01, 100.0),
    tol: float = 1e-5,
) -> float:
    """The scalar ``T`` minimising the held-out soft CE of ``softmax(logits / T)``.

    The soft CE is convex in ``1 / T`` (log-sum-exp of a linear function minus a linear one),
    hence unimodal in ``log T``: golden-section search over ``log T`` in ``bounds`` finds the
    minimum to ``tol`` (in log T).
    """
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2

    def f(log_t: float) -> float:
        return soft_ce_of_logits(logits, targets, math.exp(log_t))

    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    best = (lo + hi) / 2
    # Never worse than no scaling (T = 1 may sit outside a narrow bracket).
    return math.exp(best) if f(best) <= f(0.0) else 1.0


# ---------------------------------------------------------------------------------------------
# Evaluating a cell


def _test_fingerprint(cell: Cell, config: TrainConfig, study: StudyConfig) -> str:
    spec = {
        "test": cell.dataset.test,
        "max_test_items": cell.dataset.max_test_items,
        "data": config_to_dict(config.data),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_test_split(cell: Cell, config: TrainConfig):
    """The data set's test split (seeded subsample shared by every cell of the data set)."""
    from .train import load_split

    dataset = load_split(config.data, cell.dataset.test, "test")
    limit = cell.dataset.max_test_items
    if limit is not None and len(dataset) > limit:
        keep = np.sort(np.random.default_rng(0).permutation(len(dataset))[:limit])
        dataset = dataset.subset(keep.tolist())
    return dataset


def evaluate_cell(cell: Cell, study: StudyConfig, force: bool = False) -> dict | None:
    """Test metrics of a finished cell, raw and temperature-scaled, cached in the cell dir.

    Returns None when the cell has not finished. The cache is reused when the best checkpoint
    (its step, from ``summary.json``) and the test set are unchanged.
    """
    from .evaluation import encode_split, predict_logits
    from .model import PreferenceModel
    from .train import load_train_valid

    config = cell.config(study)
    run_dir = config.run_dir
    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():
        return None
    summary = json.loads(summary_file.read_text(encoding="utf-8"))
    fingerprint = {
        "best_step": summary.get("best_step"),
        "steps": summary.get("steps"),
        "test": _test_fingerprint(cell, config, study),
    }
    cache = run_dir / EVAL_FILE
    if cache.is_file() and not force:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("fingerprint") == fingerprint:
            return cached

    model = PreferenceModel.from_run(run_dir)
    model.eval()
    _, heldout_set = load_train_valid(config.data, config.seed)
    test_set = load_test_split(cell, config)
    heldout = encode_split(model, heldout_set, config.data.alpha, "heldout")
    test = encode_split(model, test_set, config.data.alpha, "test")
    heldout_logits = predict_logits(model, heldout, study.eval_batch_size).numpy()
    test_logits = predict_logits(model, test, study.eval_batch_size).numpy()

    temperature = fit_temperature(heldout_logits, heldout.empirical)
    out = {"fingerprint": fingerprint, "cell": cell.key, "n_test": len(test)}
    out["temperature"] = temperature
    out["heldout_soft_ce"] = {
        "raw": soft_ce_of_logits(heldout_logits, heldout.empirical),
        "scaled": soft_ce_of_logits(heldout_logits, heldout.empirical, temperature),
    }
    for kind, t in (("raw", 1.0), ("scaled", temperature)):
        q = torch.softmax(torch.as_tensor(test_logits, dtype=torch.float64) / t, -1).numpy()
        out[kind] = metrics_lib.compute_metrics(
            q, test.empirical, test.labels, true_distribution=test.true_distribution
        )
    cache.write_text(json.dumps(out, indent=2), encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------
# Aggregation, plots, report


def aggregate(cells: list[Cell], results: dict[str, dict]) -> dict:
    """``{dataset: {row: {kind: {metric: (mean, half_width, n)}}}}`` over seeds."""
    grouped: dict[str, dict[str, list[dict]]] = {}
    for cell in cells:
        result = results.get(cell.key)
        if result is None:
            continue
        grouped.setdefault(cell.dataset.name, {}).setdefault(cell.row, []).append(result)
    table: dict = {}
    for dataset, rows in grouped.items():
        for row, seeds in rows.items():
            entry = {}
            for kind in ("raw", "scaled"):
                names = [m for m in metrics_lib.METRICS if m in seeds[0][kind]]
                entry[kind] = {
                    m: (*t_interval([s[kind].get(m) for s in seeds]), len(seeds)) for m in names
                }
            entry["temperature"] = (*t_interval([s["temperature"] for s in seeds]), len(seeds))
            table.setdefault(dataset, {})[row] = entry
    return table


def conclusion(metric: str, rows: dict[str, tuple[float, float, int]]) -> str:
    """One plain sentence on which row wins ``metric``, by how much, and whether the gap
    exceeds the seed noise (the two 95% intervals do not overlap)."""
    spec = metrics_lib.METRICS[metric]
    valid = {r: v for r, v in rows.items() if not math.isnan(v[0])}
    if spec.higher_is_better is None or len(valid) < 2:
        return ""
    sign = 1 if spec.higher_is_better else -1
    order = sorted(valid, key=lambda r: -sign * valid[r][0])
    best, second = order[0], order[1]
    (m1, h1, _), (m2, h2, _) = valid[best], valid[second]
    gap = abs(m1 - m2)
    direction = "higher" if spec.higher_is_better else "lower"
    if math.isnan(h1) or math.isnan(h2):
        noise = "no interval with one seed, so the noise is unknown"
    elif (m1 - h1 > m2 + h2) if spec.higher_is_better else (m1 + h1 < m2 - h2):
        noise = "the intervals do not overlap: the gap exceeds the seed noise"
    else:
        noise = "the intervals overlap: within the seed noise"
    worst = order[-1]
    return (
        f"**{metric}** ({direction} is better): `{best}` is best ({m1:.4g}), ahead of "
        f"`{second}` by {gap:.3g} ({noise}); `{worst}` is last ({valid[worst][0]:.4g})."
    )


def _fmt(mean: float, half: float) -> str:
    if math.isnan(mean):
        return "–"
    if math.isnan(half):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {half:.4f}"


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _curve(cells: list[Cell], study: StudyConfig, split: str, key: str):
    """Mean over seeds of ``key`` per step for ``split`` records; (steps, values) arrays."""
    per_step: dict[int, list[float]] = {}
    for cell in cells:
        run_dir = study.study_dir / cell.dataset.name / cell.row / f"seed{cell.seed}"
        for record in _read_jsonl(run_dir / "metrics.jsonl"):
            value = record.get(key)
            if record.get("split") == split and isinstance(value, (int, float)):
                per_step.setdefault(int(record["step"]), []).append(float(value))
    steps = np.array(sorted(per_step))
    return steps, np.array([np.mean(per_step[s]) for s in steps])


def _smooth(values: np.ndarray, window: int = 10) -> np.ndarray:
    if len(values) < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


_STYLES = ["-", "--", "-.", ":"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _label_validation_axes(axes, metrics: tuple[str, str], title: str) -> None:
    """Axis labels of a (soft CE, JSD) validation pair; ``{}`` in ``title`` takes the metric."""
    for ax, metric in zip(axes, metrics, strict=True):
        ax.set_xlabel("optimiser step")
        ax.set_ylabel(f"validation {metric} (lower is better)")
        ax.set_title(title.replace("{}", metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)


def write_plots(study: StudyConfig, cells: list[Cell], table: dict) -> list[Path]:
    """Curves per data set, objectives per loss, the batch sweep, detached vs not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[Path] = []
    plots = study.study_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    by_dataset: dict[str, dict[str, list[Cell]]] = {}
    for cell in cells:
        by_dataset.setdefault(cell.dataset.name, {}).setdefault(cell.row, []).append(cell)

    for dataset, rows in by_dataset.items():
        main = {r: c for r, c in rows.items() if c[0].group == "main"}
        if not main:
            continue
        # 1. validation soft CE and JSD to the annotators vs steps, one line per row
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        for k, (row, row_cells) in enumerate(main.items()):
            for ax, metric in zip(axes, ("soft_ce", "jsd"), strict=True):
                steps, values = _curve(row_cells, study, "valid", metric)
                if len(steps):
                    ax.plot(steps, values, _STYLES[k % 4], marker=_MARKERS[k % 8], label=row)
        _label_validation_axes(
            axes, ("soft CE", "JSD to the annotators"), dataset + ": validation {}, mean over seeds"
        )
        out.append(_save(fig, plots / f"{dataset}-validation.png"))

        # 2. each loss's own objective vs steps (train smoothed, valid at the training batch size)
        ncols = min(5, len(main))  # a grid, not one long strip: readable on a screen
        nrows = math.ceil(len(main) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.4 * nrows), squeeze=False)
        for ax in axes.flat[len(main) :]:
            ax.set_visible(False)
        for ax, (row, row_cells) in zip(axes.flat, main.items()):
            steps, values = _curve(row_cells, study, "train", "loss")
            if len(steps):
                smooth = _smooth(values)
                label = "train (10-step mean)" if len(smooth) < len(values) else "train"
                ax.plot(steps[len(steps) - len(smooth) :], smooth, label=label)
            steps, values = _curve(row_cells, study, "valid", "loss")
            if len(steps):
                ax.plot(steps, values, "o--", label="validation")
            ax.set_title(f"{dataset}: {row}", fontsize=9)
            ax.set_xlabel("optimiser step")
            ax.set_ylabel("own training objective")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        out.append(_save(fig, plots / f"{dataset}-objectives.png"))

        # 3. gradient through the target vs detached (each loss that has a +detached row)
        pairs = [(r[: -len("+detached")], r) for r in main if r.endswith("+detached")]
        pairs = [(a, b) for a, b in pairs if a in main]
        if pairs:
            fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
            for k, (through, detached) in enumerate(pairs):
                for row, style, what in ((through, "-", "through r"), (detached, "--", "detached")):
                    for ax, metric in zip(axes, ("soft_ce", "jsd"), strict=True):
                        steps, values = _curve(main[row], study, "valid", metric)
                        if len(steps):
                            label = f"{through}: gradient {what}"
                            ax.plot(steps, values, style, marker=_MARKERS[k % 8], label=label)
            _label_validation_axes(
                axes, ("soft CE", "JSD"), f"{dataset}: gradient through the target vs detached"
            )
            out.append(_save(fig, plots / f"{dataset}-detached.png"))

        # 4. batch-size sensitivity of the batch normaliser vs the EMA normaliser
        sweep = {r: c for r, c in rows.items() if c[0].group == "sweep"}
        if sweep and dataset in table:
            fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
            normalisers = sorted({c[0].normaliser for c in sweep.values()})
            for k, normaliser in enumerate(normalisers):
                for ax, metric in zip(axes, ("soft_ce", "jsd"), strict=True):
                    points = sorted(
                        (c[0].batch_size, table[dataset][r]["raw"][metric])
                        for r, c in sweep.items()
                        if c[0].normaliser == normaliser and r in table[dataset]
                    )
                    if not points:
                        continue
                    sizes = [p[0] for p in points]
                    means = np.array([p[1][0] for p in points])
                    halves = np.nan_to_num(np.array([p[1][1] for p in points]))
                    ax.errorbar(
                        sizes,
                        means,
                        yerr=halves,
                        fmt=_STYLES[k % 4],
                        marker=_MARKERS[k % 8],
                        capsize=3,
                        label=f"{normaliser} normaliser",
                    )
            loss = next(iter(sweep.values()))[0].loss
            for ax, metric in zip(axes, ("soft CE", "JSD"), strict=True):
                ax.set_xscale("log", base=2)
                ax.set_xlabel("training batch size")
                ax.set_ylabel(f"test {metric} (lower is better), 95% CI")
                ax.set_title(f"{dataset}: {loss}, batch vs EMA normaliser")
                ax.grid(alpha=0.3)
            axes[0].legend(fontsize=8)
            out.append(_save(fig, plots / f"{dataset}-batch-sensitivity.png"))
    return out


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def git_commit(repo: Path | None = None) -> str:
    """``<sha>`` (``+dirty`` when the tree has changes), or ``unknown`` outside git."""
    cwd = str(repo or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def write_report(
    study: StudyConfig,
    cells: list[Cell],
    table: dict,
    plots: list[Path],
    command: str | None = None,
) -> Path:
    """``report.md``: tables (mean ± 95% half-width over seeds), raw and temperature-scaled,
    the exact command and commit, and a conclusion per metric computed from the numbers."""
    lines = [f"# Loss study: {study.name}", ""]
    lines += [f"- command: `{command or '(python API)'}`", f"- git commit: `{git_commit()}`"]
    expected = {}
    for cell in cells:
        expected.setdefault(cell.dataset.name, {}).setdefault(cell.row, 0)
        expected[cell.dataset.name][cell.row] += 1
    lines += [
        f"- seeds: {list(study.seeds)}; cells: {len(cells)}",
        "- every number: mean over seeds ± the half-width of the 95% t-interval "
        "(t_{0.975, n-1} s / sqrt(n)); metrics on each data set's test split, model = the best "
        "checkpoint by the run's select_metric on the held-out split",
        "- *temperature-scaled*: logits divided by one scalar T per run, fitted to minimise the "
        "soft CE on the held-out part of train (the run's validation split)",
        "",
    ]
    metric_names = [m for m, s in metrics_lib.METRICS.items() if s.higher_is_better is not None]
    sweep_rows = {c.row for c in cells if c.group == "sweep"}
    for dataset, rows in expected.items():
        lines += [f"## {dataset}", ""]
        results = table.get(dataset, {})
        missing = [r for r in rows if r not in results]
        if missing:
            lines += [f"Not finished (no results yet): {', '.join(missing)}", ""]
        if not results:
            continue
        present = [m for m in metric_names if any(m in v["raw"] for v in results.values())]
        arrows = {m: "↑" if metrics_lib.METRICS[m].higher_is_better else "↓" for m in present}
        for kind, title in (("raw", "raw"), ("scaled", "temperature-scaled")):
            lines += [f"### {title}", ""]
            header = ["row", "seeds"] + [f"{m} {arrows[m]}" for m in present]
            if kind == "scaled":
                header.append("T")
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            for row, entry in results.items():
                n = next(iter(entry[kind].values()))[2] if entry[kind] else 0
                cells_ = [f"`{row}`", str(n)]
                cells_ += [_fmt(*entry[kind][m][:2]) if m in entry[kind] else "–" for m in present]
                if kind == "scaled":
                    cells_.append(_fmt(*entry["temperature"][:2]))
                lines.append("| " + " | ".join(cells_) + " |")
            floor = [e[kind].get("entropy_floor") for e in results.values()]
            if floor and floor[0] is not None:
                lines += ["", f"Annotator entropy H(t) (soft CE floor): {floor[0][0]:.4f}"]
            lines.append("")
        main_rows = {r: e for r, e in results.items() if r not in sweep_rows}  # sweep: no contest
        lines += _temperature_summary(main_rows)
        for kind, title in (("raw", "raw"), ("scaled", "temperature-scaled")):
            lines += [f"### Conclusions ({title})", ""]
            for m in present:
                text = conclusion(m, {r: e[kind][m] for r, e in main_rows.items() if m in e[kind]})
                if text:
                    lines.append(f"- {text}")
            lines.append("")
    lines += ["## Which row wins where", ""]
    lines += _winners(table, metric_names, sweep_rows)
    if plots:
        lines += ["", "## Plots", ""]
        for p in plots:
            lines.append(f"![{p.stem}](plots/{p.name})")
    path = study.study_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _temperature_summary(rows: dict) -> list[str]:
    """One sentence on what temperature scaling did to the test soft CE, per row."""
    changes = {
        r: (e["temperature"][0], e["scaled"]["soft_ce"][0] - e["raw"]["soft_ce"][0])
        for r, e in rows.items()
        if "soft_ce" in e["raw"] and not math.isnan(e["raw"]["soft_ce"][0])
    }
    if not changes:
        return []
    most = min(changes, key=lambda r: changes[r][1])
    overconfident = sorted(r for r, (t, _) in changes.items() if t > 1)
    text = (
        f"Temperature scaling changes the test soft CE by {changes[most][1]:+.4g} for `{most}` "
        f"(T = {changes[most][0]:.3g}, the largest gain); "
    )
    if overconfident:
        text += f"rows fitted with T > 1 (over-confident): {', '.join(f'`{r}`' for r in overconfident)}."
    else:
        text += "no row was over-confident on average (every mean T <= 1)."
    return [text, ""]


def _winners(table: dict, metric_names: list[str], sweep_rows: set[str]) -> list[str]:
    out = []
    for kind in ("raw", "scaled"):
        header = ["metric"] + [f"{d} ({kind})" for d in table]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for m in metric_names:
            spec = metrics_lib.METRICS[m]
            row = [m]
            for dataset in table:
                vals = {
                    r: e[kind][m][0]
                    for r, e in table[dataset].items()
                    if r not in sweep_rows and m in e[kind] and not math.isnan(e[kind][m][0])
                }
                if not vals:
                    row.append("–")
                    continue
                pick = max if spec.higher_is_better else min
                best = pick(vals, key=vals.get)
                row.append(f"`{best}`")
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    return out


@dataclasses.dataclass
class StudyResult:
    study_dir: Path
    report: Path
    plots: list[Path]
    table: dict
    outcome: dict


def run_study(
    study: StudyConfig,
    report_only: bool = False,
    train_overrides: list[str] | None = None,
    command: str | None = None,
    progress: bool = True,
) -> StudyResult:
    """Train (or resume) every unfinished cell, evaluate each, and write plots and report."""
    cells = build_cells(study, train_overrides)
    study.study_dir.mkdir(parents=True, exist_ok=True)
    (study.study_dir / "study.yaml").write_text(
        yaml.safe_dump(_study_dict(study), sort_keys=False), encoding="utf-8"
    )
    outcome = {"cached": 0, "trained": 0, "resumed": 0}
    if not report_only:
        outcome = run_cells(cells, study, progress=progress)
    results = {}
    for cell in cells:
        result = evaluate_cell(cell, study)
        if result is not None:
            results[cell.key] = result
    outcome["evaluated"] = len(results)
    table = aggregate(cells, results)
    (study.study_dir / "results.json").write_text(json.dumps(table, indent=2), encoding="utf-8")
    plots = write_plots(study, cells, table)
    report = write_report(study, cells, table, plots, command)
    logger.info("study %s: %s; report %s", study.name, outcome, report)
    return StudyResult(study.study_dir, report, plots, table, outcome)


def _study_dict(study: StudyConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(study), default=str))
