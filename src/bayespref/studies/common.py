"""What the loss study and the calibration study share: cached steps, records and formatting.

- A study step is an ordinary run whose directory holds its resolved ``config.yaml``.
  :func:`run_status` says whether it is ``new``, ``partial`` (interrupted: resume) or ``done``,
  and refuses a directory that holds a run of another config (:class:`StudyError`);
  :func:`run_unless_done` runs a step by that status and names the outcome
  (``cached`` | ``trained`` | ``resumed``, counted in :func:`empty_outcome`).
- Study configs: :func:`as_specs` (a list section of mappings as spec dataclasses).
- Records: :func:`save_study_record` (``study.yaml``), :func:`write_json` (atomic),
  :func:`sha256_json` / :func:`sha256_file` (cache keys), :func:`git_commit` (the report's
  commit), :func:`save_figure` (a plot file).
- Report numbers: :func:`is_finite`, :func:`format_number`, :func:`format_interval`,
  :func:`format_mean_half_width`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from ..config import ConfigError, from_dict, to_dict
from ..safety import TrainingInterrupted

logger = logging.getLogger(__name__)

# Config keys that do not change what a run computes (ignored when matching a cached run).
COSMETIC_KEYS = ("progress", "tensorboard")

OUTCOMES = ("cached", "trained", "resumed")


class StudyError(RuntimeError):
    """A study that cannot run as configured (e.g. a cached step with a different config)."""


# ---------------------------------------------------------------------------------------------
# Study configs


def as_specs(items: list, cls: type, key: str) -> list:
    """Each item of a study's list section as a ``cls`` (a YAML mapping goes through
    :func:`~bayespref.config.from_dict`, its errors naming ``key``)."""
    return [item if isinstance(item, cls) else from_dict(cls, item, key) for item in items]


# ---------------------------------------------------------------------------------------------
# Cached steps


def run_status(
    config: Any, finished: tuple[str, ...] = ("summary.json",), what: str = "run"
) -> str:
    """``new`` (nothing there), ``partial`` (interrupted: resume) or ``done`` (every path in
    ``finished`` exists) for a run whose directory (``config.run_dir``) holds its resolved
    ``config.yaml``.

    Raises :class:`StudyError` when the directory holds a run of a different config; keys that
    do not change what a run computes (:data:`COSMETIC_KEYS`) are ignored.
    """
    run_dir = config.run_dir
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return "new"
    saved = _comparable(
        as_current_version(type(config), yaml.safe_load(saved_file.read_text(encoding="utf-8")))
    )
    wanted = _comparable(yaml.safe_load(yaml.safe_dump(to_dict(config))))
    if saved != wanted:
        diff = sorted(_diff_keys(saved, wanted))
        raise StudyError(
            f"{run_dir} holds a {what} of a different config (keys {diff}); delete that folder "
            "to rerun it, or give the study another name"
        )
    return "done" if all((run_dir / f).exists() for f in finished) else "partial"


def as_current_version(cls: type, saved: dict | None) -> dict:
    """A saved run config as this version of ``cls`` reads it: keys added to the config since
    the run was written take their defaults, so a cached run stays cached when a new option
    leaves what it computes unchanged. A saved config this version cannot read (a renamed or
    removed key) comes back as it was, and then differs from the wanted one."""
    saved = saved or {}
    try:
        return yaml.safe_load(yaml.safe_dump(to_dict(from_dict(cls, saved))))
    except (ConfigError, TypeError, ValueError):
        return saved


def _comparable(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in COSMETIC_KEYS}


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in set(a) | set(b):
            out += _diff_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


def run_unless_done(status: str, run: Callable[..., Any], config: Any) -> str:
    """Run a cached step by its :func:`run_status` and name the outcome.

    ``run`` is a recipe's entry point, ``run(config, resume=...)`` (``train``, ``calibrate``).
    ``done``: nothing runs, ``cached``; ``partial``: resumed, ``resumed``; ``new``: ``trained``.
    """
    if status == "done":
        return "cached"
    resume = status == "partial"
    run(config, resume=resume)
    return "resumed" if resume else "trained"


def train_cells(
    cells: Sequence[Any],
    config_of: Callable[[Any], Any],
    run: Callable[..., Any],
    desc: str = "study cells",
    progress: bool = True,
) -> dict[str, int]:
    """Train every unfinished cell of a study with ``run`` (a recipe's entry point, see
    :func:`run_unless_done`), resuming interrupted ones; counts by outcome. ``config_of(cell)``
    is the cell's run config; each cell has a ``key``. An interruption (Ctrl-C, SIGTERM) names
    the cell and says how to resume."""
    outcome = empty_outcome()
    bar = tqdm(cells, desc=desc, unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.key)
        config = config_of(cell)
        status = run_status(config)
        if status != "done":
            logger.info("cell %s: %s", cell.key, "resuming" if status == "partial" else "training")
        try:
            outcome[run_unless_done(status, run, config)] += 1
        except TrainingInterrupted as err:
            bar.close()
            raise TrainingInterrupted(
                f"study interrupted in cell {cell.key} at step {err.step} (checkpoint saved); "
                "rerun the same `bayespref compare` command to resume the study",
                err.step,
            ) from err
    bar.close()
    return outcome


def empty_outcome() -> dict[str, int]:
    """``{cached, trained, resumed}`` counts of a study's steps, all 0."""
    return dict.fromkeys(OUTCOMES, 0)


# ---------------------------------------------------------------------------------------------
# Records


def save_study_record(study: Any, study_dir: Path, sort_keys: bool = False) -> Path:
    """``<study_dir>/study.yaml``: the resolved study config (paths as strings), for the record
    (nothing reads it back; each step matches its own ``config.yaml``)."""
    study_dir.mkdir(parents=True, exist_ok=True)
    plain = json.loads(json.dumps(dataclasses.asdict(study), default=str))
    path = study_dir / "study.yaml"
    path.write_text(yaml.safe_dump(plain, sort_keys=sort_keys), encoding="utf-8")
    return path


def write_json(path: Path, payload: Any, indent: int | None = None) -> None:
    """Write ``payload`` as JSON through a temporary file and a rename, so that a reader (or a
    rerun after a crash) never sees half a file. Parent folders are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=indent), encoding="utf-8")
    tmp.replace(path)


def sha256_json(payload: Any) -> str:
    """Hex SHA-256 of ``payload`` as canonical JSON (sorted keys; other objects as ``str``):
    the key of a cached result."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out a matplotlib figure, write it to ``path`` (110 dpi) and close it."""
    import matplotlib.pyplot as plt  # optional at import time: only the reports draw

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Report numbers


def is_finite(x: Any) -> bool:
    """Whether ``x`` is an int or float that is neither nan nor infinite (None is not)."""
    return isinstance(x, int | float) and math.isfinite(x)


def format_number(x: Any, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals, or ``-`` when it is missing or not finite."""
    return f"{x:.{digits}f}" if is_finite(x) else "-"


def format_interval(d: dict, digits: int = 4) -> str:
    """``mean [low, high]`` of an interval dict (:func:`bayespref.stats.mean_t_interval`)."""
    return (
        f"{format_number(d['mean'], digits)} [{format_number(d['low'], digits)}, "
        f"{format_number(d['high'], digits)}]"
    )


def format_mean_half_width(mean: float, half_width: float) -> str:
    """``mean ± half_width`` (4 decimals); the mean alone when the half-width is nan (one
    seed), ``–`` when the mean is nan."""
    if math.isnan(mean):
        return "–"
    if math.isnan(half_width):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {half_width:.4f}"
