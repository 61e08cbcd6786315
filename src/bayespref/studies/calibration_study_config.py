"""What a calibration study is: its config (:class:`CalibrationStudyConfig`, one
:class:`TaskSpec` per task) and the config of every step it runs under
``<output_dir>/<study>/<task>/``:

- :func:`pm_config`: ``pm/<loss>``, a preference model per loss (and ``pm/judge-<loss>-seed<k>``
  for a preference-model judge, :func:`judge_run_name`);
- :func:`generation_config`: ``candidates/generated.jsonl``, the candidate search shared by
  every loss (no scorer);
- :func:`calibration_config`: ``calibrated/<loss>``, the generator calibrated on that loss's
  ranking (``candidates/<loss>.jsonl``);
- :func:`control_config`: ``calibrated/<control>``, a calibration without a preference model
  (:data:`CONTROLS`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..calibration import CalibrationConfig, ContextsConfig
from ..config import (
    ConfigError,
    DecodingConfig,
    TrainConfig,
    apply_overrides,
    field_help,
    from_dict,
    load_config,
    load_yaml,
    to_dict,
)
from ..decoding import ANSWER_DECODING
from .common import as_specs

# Control calibrations: what the same run does without a preference model. ``mle-only`` trains on
# the same contexts with the ranking and gold terms off (rank_weight = gold_weight = 0), so the
# losses' generators can be compared with what MLE on the gold replies alone buys.
CONTROLS = {"mle-only": ["loss.rank_weight=0", "loss.gold_weight=0"]}
CONTROL_TEXT = {"mle-only": "the same calibration with the ranking and gold terms off"}


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class TaskSpec:
    name: str = field_help("synthetic", "task folder name")
    pm_config: str = field_help(
        "configs/synthetic.yaml", "training config of the preference models"
    )
    pm_overrides: list = field_help([], "key=value overrides of that config, for this task")
    contexts: dict = field_help(
        {"source": "synthetic", "n": 104, "seed": 1, "n_eval": 8},
        "training contexts (calibration's data section: candidates + calibration; n_eval of "
        "them held out for the gold NLL logged during calibration)",
    )
    eval_contexts: dict = field_help(
        {"source": "synthetic", "n": 200, "seed": 4},
        "held-out evaluation contexts (same forms; contexts also in training are dropped)",
    )
    judge: str | dict = field_help(
        "oracle", "'oracle' (synthetic) or {loss, seed}: a preference model trained apart"
    )
    rule: str = field_help("expected-utility", "preference score rule of the rankers and the judge")

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ConfigError(f"tasks[].name must be a plain folder name, got {self.name!r}")
        from_dict(ContextsConfig, self.contexts, f"tasks[{self.name}].contexts")
        from_dict(ContextsConfig, self.eval_contexts, f"tasks[{self.name}].eval_contexts")
        if self.judge != "oracle" and not (
            isinstance(self.judge, dict) and set(self.judge) == {"loss", "seed"}
        ):
            raise ConfigError(f"tasks[{self.name}].judge must be 'oracle' or {{loss, seed}}")


@dataclasses.dataclass
class CalibrationStudyConfig:
    """The calibration study (``bayespref calibration-study``): per task, a ranking preference
    model per loss, a generator calibrated on each ranking, and the controls."""

    name: str = field_help("calibration-study", "study name: outputs go to <output_dir>/<name>/")
    output_dir: str = field_help("runs", "parent folder of the study")
    seed: int = field_help(0, "seed of candidate generation, calibration and evaluation decoding")
    pm_seed: int = field_help(0, "seed of the ranking preference models")
    losses: list = field_help(
        ["forward-kl", "reverse-kl", "jsd", "soft", "majority"], "one ranking PM per loss"
    )
    pm_overrides: list = field_help([], "key=value overrides of every preference model")
    generator: dict = field_help({}, "base generator (bayespref.lm.GeneratorConfig fields)")
    decoding: dict = field_help({}, "candidate search (calibration's decoding section)")
    calibration: list = field_help([], "key=value overrides of every calibration run (loss.*, ...)")
    eval_decoding: dict = field_help(
        {"method": "greedy"},
        "evaluation decoding (config.DecodingConfig fields; defaults: "
        "bayespref.decoding.ANSWER_DECODING)",
    )
    tasks: list = field_help(
        [], "[{name, pm_config, pm_overrides, contexts, eval_contexts, judge}]"
    )
    max_perplexity_rise: float = field_help(0.10, "acceptance: gold perplexity may rise this much")
    controls: list = field_help(
        ["mle-only"], "control calibrations without a preference model (mle-only: gold MLE)"
    )

    def __post_init__(self):
        self.tasks = as_specs(self.tasks, TaskSpec, "tasks[]")
        if not self.tasks:
            raise ConfigError("a calibration study needs at least one task")
        if not self.losses:
            raise ConfigError("a calibration study needs at least one loss")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ConfigError(f"tasks[].name must be unique, got {names}")
        if not self.name or "/" in self.name:
            raise ConfigError(f"name must be a plain folder name, got {self.name!r}")
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise ConfigError(f"controls: unknown {unknown}; known: {sorted(CONTROLS)}")
        if "chat_template" in self.eval_decoding:
            raise ConfigError(
                "config key eval_decoding.chat_template was removed: every generator answers "
                "with its own prompt format, generator.chat_template"
            )
        self.answer_decoding()  # validated now, not after hours of training

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def answer_decoding(self) -> DecodingConfig:
        """How every generator answers the held-out contexts: ``eval_decoding`` over the
        answer-decoding defaults, with the study's seed."""
        settings = {**ANSWER_DECODING, **self.eval_decoding, "seed": self.seed}
        return from_dict(DecodingConfig, settings, "eval_decoding")


def load_calibration_study(
    path: str | Path, quick: bool = False, overrides: list[str] | None = None
) -> CalibrationStudyConfig:
    """:func:`~bayespref.config.load_yaml` of a :class:`CalibrationStudyConfig` file
    (``quick``: its ``quick`` section; ``overrides``: dotted ``key=value`` study keys)."""
    return load_yaml(CalibrationStudyConfig, path, overrides, quick=quick)


# ---------------------------------------------------------------------------------------------
# Step configs


def pm_config(
    study: CalibrationStudyConfig,
    task: TaskSpec,
    loss: str,
    seed: int,
    run_name: str,
    train_overrides: list[str] | None = None,
) -> TrainConfig:
    """The preference model ``pm/<run_name>`` of ``task``: the task's training config with the
    task's, the study's, the loss's, then ``train_overrides``, seed and run directory."""
    overrides = [
        *task.pm_overrides,
        *study.pm_overrides,
        f"loss.name={loss}",
        *(train_overrides or []),
        f"seed={seed}",
        f"name={run_name}",
        f"output_dir={study.study_dir / task.name / 'pm'}",
    ]
    return load_config(task.pm_config, overrides)


def judge_run_name(judge: dict) -> str:
    """The run name of a preference-model judge ``{loss, seed}``: ``judge-<loss>-seed<k>``."""
    return f"judge-{judge['loss']}-seed{judge['seed']}"


def _calibration_config(
    study: CalibrationStudyConfig, task: TaskSpec, name: str, scorer_run: str | None, cache: Path
) -> CalibrationConfig:
    """One calibration run of the study: its settings, then the study's ``calibration``
    overrides; ``scorer_run`` ranks the candidates cached at ``cache``."""
    data = {
        "name": name,
        "output_dir": str(study.study_dir / task.name / "calibrated"),
        "seed": study.seed,
        "generator": dict(study.generator),
        "data": dict(task.contexts),
        "scorer": {"run": scorer_run, "rule": task.rule},
        "decoding": dict(study.decoding),
        "candidates": str(cache),
        "progress": False,
    }
    return from_dict(CalibrationConfig, apply_overrides(data, study.calibration))


def generation_config(study: CalibrationStudyConfig, task: TaskSpec) -> CalibrationConfig:
    """The candidate search, shared by every loss: no scorer (the generator's own ranking)."""
    cache = study.study_dir / task.name / "candidates" / "generated.jsonl"
    config = _calibration_config(study, task, "candidates", None, cache)
    return dataclasses.replace(config, output_dir=str(cache.parent.parent))


def calibration_config(
    study: CalibrationStudyConfig, task: TaskSpec, loss: str
) -> CalibrationConfig:
    """The generator calibrated on ``loss``'s ranking (``calibrated/<loss>``), its candidates
    re-scored by ``pm/<loss>`` into ``candidates/<loss>.jsonl``."""
    pm_dir = study.study_dir / task.name / "pm" / loss
    cache = study.study_dir / task.name / "candidates" / f"{loss}.jsonl"
    return _calibration_config(study, task, loss, str(pm_dir), cache)


def control_config(
    study: CalibrationStudyConfig, task: TaskSpec, control: str
) -> CalibrationConfig:
    """A control calibration: the study's settings, no preference model, :data:`CONTROLS`'
    overrides last (the shared candidates are read but, with the ranking off, not forwarded)."""
    config = generation_config(study, task)
    data = to_dict(config)
    data.update(name=control, output_dir=str(study.study_dir / task.name / "calibrated"))
    return from_dict(CalibrationConfig, apply_overrides(data, CONTROLS[control]))
