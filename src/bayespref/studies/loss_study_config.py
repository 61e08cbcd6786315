"""What a loss study is: its config (:class:`StudyConfig`) and the grid of cells it defines.

A cell is one ordinary preference-model training run, named deterministically
``<output_dir>/<study>/<dataset>/<row>/seed<k>``, where a *row* is a loss plus an optional
*variant* (a named set of config overrides, e.g. ``detached`` = ``loss.detach_target=true``), or
one point of the batch-size sweep. :func:`build_cells` lists them; :class:`Cell.config` is the
cell's :class:`~bayespref.config.TrainConfig`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..config import ConfigError, TrainConfig, field_help, from_dict, load_config, load_yaml
from .common import as_specs

# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class DatasetSpec:
    name: str = field_help("dataset", "folder name of the data set in the study")
    config: str = field_help("configs/synthetic.yaml", "training config file of this data set")
    overrides: list = field_help([], "key=value overrides of that config (e.g. data.valid=null)")
    test: str | dict | None = field_help(
        None, "test split: a file path or a dict of loader options (same forms as data.train)"
    )
    max_test_items: int | None = field_help(
        None, "seeded subsample of the test split (same for all)"
    )

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ConfigError(f"datasets[].name must be a plain folder name, got {self.name!r}")
        if self.test is None:
            raise ConfigError(f"datasets[{self.name}].test is required (the test split)")


@dataclasses.dataclass
class VariantSpec:
    name: str = field_help("variant", "variant name, used in row names: <loss>+<variant>")
    overrides: list = field_help([], "key=value overrides this variant applies")

    def __post_init__(self):
        if not self.name or "/" in self.name or "+" in self.name:
            raise ConfigError(f"variants[].name must be plain (no / or +), got {self.name!r}")


@dataclasses.dataclass
class RowSpec:
    loss: str = field_help("forward-kl", "loss name (bayespref.losses.LOSSES)")
    variant: str | None = field_help(None, "variant name (null: the loss as configured)")
    datasets: list | None = field_help(None, "data sets this row runs on (null: all)")
    seeds: list | None = field_help(None, "seeds of this row (null: the study's seeds)")
    title: str | None = field_help(
        None, "the row's name in folders and the report (null: <loss>+<variant>)"
    )

    def __post_init__(self):
        if self.title is not None and (not self.title or "/" in self.title):
            raise ConfigError(f"rows[].title must be a plain name (no /), got {self.title!r}")

    @property
    def name(self) -> str:
        if self.title is not None:
            return self.title
        return self.loss if self.variant is None else f"{self.loss}+{self.variant}"


@dataclasses.dataclass
class BatchSweepSpec:
    loss: str = field_help("forward-kl", "d-PM loss whose normaliser is compared")
    batch_sizes: list = field_help([4, 8, 16, 32, 64], "training batch sizes")
    normalisers: list = field_help(["batch", "ema"], "loss.normaliser values compared")
    datasets: list | None = field_help(None, "data sets of the sweep (null: all)")
    seeds: list | None = field_help(None, "seeds of the sweep (null: the study's seeds)")


@dataclasses.dataclass
class StudyConfig:
    """The loss study (``bayespref compare``): losses x variants x data sets x seeds."""

    name: str = field_help("study", "study name: cells go to <output_dir>/<name>/")
    output_dir: str = field_help("runs", "parent folder of the study")
    seeds: list = field_help([0, 1, 2], "seeds of every cell (at least 2 for an interval)")
    losses: list = field_help(
        ["forward-kl", "reverse-kl", "jsd", "soft", "majority"], "plain rows: each loss as is"
    )
    rows: list = field_help([], "extra rows: [{loss, variant, datasets, seeds}]")
    variants: list = field_help([], "named override sets: [{name, overrides: [key=value, ...]}]")
    datasets: list = field_help([], "[{name, config, overrides, test, max_test_items}]")
    overrides: list = field_help(
        [], "key=value overrides applied to every cell (after the data set's)"
    )
    batch_sweep: dict | None = field_help(
        None, "batch-size sensitivity: {loss, batch_sizes, normalisers, datasets, seeds}"
    )
    eval_batch_size: int = field_help(64, "batch size of the test and held-out forward passes")

    def __post_init__(self):
        self.datasets = as_specs(self.datasets, DatasetSpec, "datasets[]")
        self.variants = as_specs(self.variants, VariantSpec, "variants[]")
        self.rows = as_specs(self.rows, RowSpec, "rows[]")
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
    """:func:`~bayespref.config.load_yaml` of a :class:`StudyConfig` file (``quick``: its
    ``quick`` section; ``overrides``: dotted ``key=value`` study keys)."""
    return load_yaml(StudyConfig, path, overrides, quick=quick)


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
        """The cell's training config: the data set's config file with the cell's overrides."""
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
    if isinstance(sweep, BatchSweepSpec) and (sweep.datasets is None or dataset in sweep.datasets):
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
