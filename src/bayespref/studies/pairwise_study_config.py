"""What a pairwise study is: its config (:class:`PairwiseStudyConfig`) and its cells.

A pairwise study (``bayespref compare`` on a file with ``kind: pairwise``) trains one reward
model per row and seed from one base ``train-pairwise`` config. A *row* is a loss plus optional
overrides (e.g. ``forward-kl`` with ``loss.detach_target=true``). Its held-out *test pairs*
replace the base config's validation pairs, and the report reads the metrics of the LAST step
on them, so no checkpoint is ever selected on the test pairs. A cell is an ordinary
``train-pairwise`` run in ``<output_dir>/<name>/<row>/seed<k>``.

:func:`study_kind` tells this study from the loss study by the file's ``kind`` key.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from ..config import ConfigError, field_help, from_dict, load_yaml, read_yaml_mapping
from ..config.pairwise import PAIRWISE_LOSS_NAMES, PairwiseTrainConfig, load_pairwise_config
from ..pairwise_metrics import PAIRWISE_METRICS
from .common import as_specs

STUDY_KINDS = ("loss", "pairwise")
"""``kind`` of a ``compare`` file: ``loss`` (no ``kind`` key: the loss study) or ``pairwise``."""


def study_kind(path: str | os.PathLike) -> str:
    """The study a ``compare`` config file describes: its ``kind`` key, ``loss`` when absent.

    A loss-study file has no ``kind`` key (its schema has none); a pairwise study says
    ``kind: pairwise``. Any other value is a :class:`ConfigError` naming the file.
    """
    kind = read_yaml_mapping(path).get("kind", "loss")
    if kind not in STUDY_KINDS:
        raise ConfigError(
            f"{path}: kind must be pairwise (a pairwise study) or absent (the loss study), "
            f"got {kind!r}"
        )
    return str(kind)


@dataclasses.dataclass
class PairwiseRowSpec:
    name: str = field_help("soft", "the row's name in folders and the report")
    loss: str = field_help("soft", f"loss.name of the row: {'|'.join(PAIRWISE_LOSS_NAMES)}")
    overrides: list = field_help([], "key=value overrides of this row (after the study's)")
    note: str | None = field_help(None, "shown after the name in the report, e.g. soft BT")

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ConfigError(f"rows[].name must be a plain folder name, got {self.name!r}")
        if self.loss not in PAIRWISE_LOSS_NAMES:
            raise ConfigError(
                f"rows[{self.name}].loss must be one of {list(PAIRWISE_LOSS_NAMES)}, "
                f"got {self.loss!r}"
            )

    @property
    def label(self) -> str:
        """``name`` in backticks, with the note in parentheses (the report's row label)."""
        return f"`{self.name}`" + (f" ({self.note})" if self.note else "")


@dataclasses.dataclass
class HeadToHeadSpec:
    rows: list = field_help(["soft", "majority"], "the two rows compared")
    metrics: list = field_help(["kl_true", "ece"], "metrics they are compared on")

    def __post_init__(self):
        if len(self.rows) != 2 or self.rows[0] == self.rows[1]:
            raise ConfigError(f"head_to_head.rows must name two different rows, got {self.rows}")
        unknown = [m for m in self.metrics if m not in PAIRWISE_METRICS]
        if unknown or not self.metrics:
            raise ConfigError(
                f"head_to_head.metrics: unknown {unknown or 'empty list'}; "
                f"known: {list(PAIRWISE_METRICS)}"
            )


@dataclasses.dataclass
class PairwiseStudyConfig:
    """A pairwise study: reward-model losses x seeds on one base config, tested on held-out
    pairs (``bayespref compare --config configs/pairwise-study.yaml``)."""

    kind: str = field_help("pairwise", "pairwise (the key that tells `compare` this study)")
    name: str = field_help("pairwise-study", "study name: cells go to <output_dir>/<name>/")
    output_dir: str = field_help("runs", "parent folder of the study")
    config: str = field_help(
        "configs/pairwise-synthetic.yaml", "base train-pairwise config of every cell"
    )
    seeds: list = field_help([0, 1, 2], "seeds of every row (initialisation and batch order)")
    rows: list = field_help([], "[{name, loss, overrides, note}]: one reward model per row")
    test: str | dict | None = field_help(
        None,
        "held-out test pairs, in the forms of the base config's data.train (synthetic "
        "{n, seed, ...} or a file); they replace data.valid and the report reads the last "
        "step's metrics on them",
    )
    overrides: list = field_help([], "key=value overrides of every cell (before the row's)")
    head_to_head: dict | None = field_help(
        None, "{rows: [a, b], metrics: [...]}: say whether a beats b beyond the seed noise"
    )

    def __post_init__(self):
        if self.kind != "pairwise":
            raise ConfigError(f"kind must be pairwise in a pairwise study, got {self.kind!r}")
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a plain folder name, got {self.name!r}")
        if not self.seeds:
            raise ConfigError("a study needs at least one seed")
        if self.test is None:
            raise ConfigError("test is required: the held-out pairs the report is measured on")
        self.rows = as_specs(self.rows, PairwiseRowSpec, "rows[]")
        if not self.rows:
            raise ConfigError("a pairwise study needs at least one entry in rows")
        names = [row.name for row in self.rows]
        if len(set(names)) != len(names):
            raise ConfigError(f"rows[].name must be unique, got {names}")
        if isinstance(self.head_to_head, dict):
            self.head_to_head = from_dict(HeadToHeadSpec, self.head_to_head, "head_to_head")
        if isinstance(self.head_to_head, HeadToHeadSpec):
            missing = [r for r in self.head_to_head.rows if r not in names]
            if missing:
                raise ConfigError(f"head_to_head.rows: unknown row(s) {missing}; rows: {names}")

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_pairwise_study(
    path: str | os.PathLike, quick: bool = False, overrides: list[str] | None = None
) -> PairwiseStudyConfig:
    """:func:`~bayespref.config.load_yaml` of a :class:`PairwiseStudyConfig` file (``quick``:
    its ``quick`` section; ``overrides``: dotted ``key=value`` study keys)."""
    return load_yaml(PairwiseStudyConfig, path, overrides, quick=quick)


@dataclasses.dataclass
class PairwiseCell:
    row: PairwiseRowSpec
    seed: int
    base_config: str
    overrides: list[str]  # the full override list applied to base_config

    def config(self) -> PairwiseTrainConfig:
        """The cell's ``train-pairwise`` config: the base file with the cell's overrides."""
        return load_pairwise_config(self.base_config, self.overrides)

    @property
    def key(self) -> str:
        return f"{self.row.name}/seed{self.seed}"


def build_pairwise_cells(
    study: PairwiseStudyConfig, train_overrides: list[str] | None = None
) -> list[PairwiseCell]:
    """Every cell, in a fixed order (row, seed). A cell's overrides, later ones winning: the
    study's, the test pairs as ``data.valid``, the row's loss and overrides,
    ``train_overrides``, then seed and run directory."""
    cells = []
    for row in study.rows:
        for seed in study.seeds:
            overrides = [
                *study.overrides,
                f"data.valid={json.dumps(study.test)}",  # JSON is YAML: a path or a mapping
                f"loss.name={row.loss}",
                *row.overrides,
                *(train_overrides or []),
                f"seed={seed}",
                f"name=seed{seed}",
                f"output_dir={study.study_dir / row.name}",
            ]
            cells.append(PairwiseCell(row, int(seed), study.config, overrides))
    return cells
