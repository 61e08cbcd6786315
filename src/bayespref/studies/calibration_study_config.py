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
  (:data:`CONTROLS`);
- the sweep rows, the DPO peer and the evaluation contexts' candidates (best-of-K):
  :mod:`.calibration_peer_configs`, from the specs here (:class:`VariantSpec`,
  :class:`SweepRowSpec`, :class:`DPOPeerSpec`, :class:`BestOfKSpec`).
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
from ..dpo import DPOConfig
from ..export import STRATEGIES
from .common import as_specs

# Control calibrations: what the same run does without a preference model. ``mle-only`` trains on
# the same contexts with the ranking and gold terms off (rank_weight = gold_weight = 0), so the
# losses' generators can be compared with what MLE on the gold replies alone buys.
CONTROLS = {"mle-only": ["loss.rank_weight=0", "loss.gold_weight=0"]}
CONTROL_TEXT = {"mle-only": "the same calibration with the ranking and gold terms off"}

# Calibration keys a sweep variant may not change: the run's identity, the ranking preference
# model and the contexts, so that every row is paired with the others on the same contexts.
FIXED_CALIBRATION_KEYS = ("name", "output_dir", "seed", "candidates", "scorer", "generator", "data")
DPO_RUN = "dpo"  # calibrated/dpo: the DPO peer's run folder
FIXED_DPO_KEYS = ("name", "output_dir", "seed", "pairs", "generator")


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class TaskSpec:
    name: str = field_help("synthetic", "task folder name")
    pm_config: str = field_help(
        "configs/synthetic.yaml", "training config of the preference models"
    )
    pm_overrides: list = field_help([], "key=value overrides of that config, for this task")
    annotate: str | None = field_help(
        None,
        "an annotate-synthetic config (configs/annotate-synthetic.yaml) run first, cached: the "
        "preference models' in-distribution data (pm_overrides point data.train at its files)",
    )
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
class VariantSpec:
    """A named set of calibration overrides (a sweep setting), applied after the study's own
    ``calibration`` list."""

    name: str = field_help("variant", "variant name: its rows are <loss>+<variant>")
    overrides: list = field_help([], "calibration key=value overrides (loss.*, optim.*, ...)")

    def __post_init__(self):
        if not self.name or "/" in self.name or ROW_SEPARATOR in self.name:
            raise ConfigError(
                f"variants[].name must be plain (no / or {ROW_SEPARATOR}), got {self.name!r}"
            )
        for item in self.overrides:
            key = str(item).split("=", 1)[0].strip().lstrip("-")
            if key.split(".")[0] in FIXED_CALIBRATION_KEYS:
                raise ConfigError(
                    f"variants[{self.name}]: {key} is fixed by the study (a variant may not change "
                    f"{', '.join(FIXED_CALIBRATION_KEYS)})"
                )


ROW_SEPARATOR = "+"  # a sweep row's name: <loss or control>+<variant>


def split_row_name(name: str) -> tuple[str, str | None]:
    """``(loss or control, variant)`` of a generator's name in the study: ``("soft",
    "epochs3")`` for the sweep row ``soft+epochs3``, ``("soft", None)`` for a loss, a control
    or a peer run at the study's own setting."""
    loss, separator, variant = name.partition(ROW_SEPARATOR)
    return loss, (variant if separator else None)


def matched_control_name(control: str, name: str) -> str | None:
    """The control at a sweep row's variant (``mle-only+epochs3`` for ``soft+epochs3``): the
    same budget without the ranking; None for a generator at the study's own setting."""
    _, variant = split_row_name(name)
    return None if variant is None else f"{control}{ROW_SEPARATOR}{variant}"


@dataclasses.dataclass
class SweepRowSpec:
    """One sweep row: ``loss``'s preference model ranks, ``variant``'s settings calibrate."""

    loss: str = field_help(
        "soft",
        "the loss whose preference model ranks the candidates, or a control (mle-only): the "
        "control at the variant's settings, the budget-matched reference of that variant's rows",
    )
    variant: str = field_help("variant", "a variants[].name")
    tasks: list | None = field_help(None, "task names this row runs on (null: every task)")
    pm: str | None = field_help(
        None,
        "a control row only: the loss whose preference model ranks the candidates the control "
        "reads; needed when the variant trains on the top candidate (loss.mle_target="
        "top-candidate): the control is then fine-tuning on that model's pick, ranking off",
    )

    @property
    def name(self) -> str:
        """The row's folder and report name: ``<loss>+<variant>``."""
        return f"{self.loss}{ROW_SEPARATOR}{self.variant}"

    def runs_on(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks


@dataclasses.dataclass
class DPOPeerSpec:
    """The DPO peer: ``bayespref dpo`` on pairs exported from one preference model's ranking of
    the study's training candidates, at the calibration's budget (:func:`dpo_config`)."""

    pm: str = field_help("soft", "the loss whose preference model ranked the exported pairs")
    strategy: str = field_help("best-vs-worst", f"export-pairs strategy: {' | '.join(STRATEGIES)}")
    overrides: list = field_help([], "bayespref dpo key=value overrides, last (dpo.beta=...)")

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"dpo.strategy must be one of {'|'.join(STRATEGIES)}, got {self.strategy!r}"
            )


@dataclasses.dataclass
class BestOfKSpec:
    """Candidates of the held-out evaluation contexts: best-of-K reranking of the base generator
    and every generator's own ranking accuracy on the same sets."""

    ks: list = field_help(
        [4], "K of best-of-K: each context's K highest beam-scored candidates, reranked"
    )
    decoding: dict = field_help(
        {}, "the search: the study's decoding with these keys replaced (num_beams: 16, ...)"
    )
    generator_ranking: bool = field_help(
        True, "measure each generator's own ranking accuracy on these candidate sets"
    )
    rank_sweep_rows: bool = field_help(
        True,
        "include the sweep rows in that measure (each costs about as much as evaluating it; "
        "their ranking on the calibration's held-out contexts is logged anyway)",
    )
    tasks: list | None = field_help(None, "task names searched (null: every task)")

    def runs_on(self, task: str) -> bool:
        return self.tasks is None or task in self.tasks

    def __post_init__(self):
        if not self.ks or any(
            isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.ks
        ):
            raise ConfigError(f"best_of_k.ks must be a list of integers >= 1, got {self.ks}")


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
    variants: list = field_help([], "named calibration settings: [{name, overrides}]")
    rows: list = field_help(
        [], "sweep rows: [{loss, variant, tasks}] -> calibrated/<loss>+<variant>"
    )
    dpo: dict | None = field_help(None, "the DPO peer {pm, strategy, overrides} (null: none)")
    best_of_k: dict | None = field_help(
        None, "best-of-K on the evaluation contexts {ks, decoding, generator_ranking, tasks}"
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
        self.variants = as_specs(self.variants, VariantSpec, "variants[]")
        self.rows = as_specs(self.rows, SweepRowSpec, "rows[]")
        self._check_rows(names)
        self.answer_decoding()  # validated now, not after hours of training
        self.dpo_peer()
        spec = self.best_of_k_spec()
        if spec is not None:
            unknown = [t for t in spec.tasks or [] if t not in names]
            if unknown:
                raise ConfigError(f"best_of_k.tasks: unknown {unknown}; tasks: {names}")
            search = self.eval_search()
            too_large = [k for k in spec.ks if k > search.num_beams]
            if too_large:
                raise ConfigError(
                    f"best_of_k.ks {too_large} exceed the evaluation search's "
                    f"{search.num_beams} candidates per context (best_of_k.decoding.num_beams)"
                )

    def _check_rows(self, task_names: list[str]) -> None:
        variants = [v.name for v in self.variants]
        if len(set(variants)) != len(variants):
            raise ConfigError(f"variants[].name must be unique, got {variants}")
        rows = [r.name for r in self.rows]
        if len(set(rows)) != len(rows):
            raise ConfigError(f"rows must be unique, got {rows}")
        for row in self.rows:
            if row.loss not in self.losses and row.loss not in self.controls:
                raise ConfigError(
                    f"rows: {row.name}: loss {row.loss!r} is not in losses {self.losses} "
                    f"or controls {self.controls}"
                )
            if row.variant not in variants:
                raise ConfigError(f"rows: {row.name}: unknown variant; variants: {variants}")
            unknown = [t for t in row.tasks or [] if t not in task_names]
            if unknown:
                raise ConfigError(f"rows: {row.name}: unknown tasks {unknown}; tasks: {task_names}")
            if row.pm is not None and (row.loss not in self.controls or row.pm not in self.losses):
                raise ConfigError(
                    f"rows: {row.name}: pm is for a control row and must be one of the losses "
                    f"{self.losses}, got {row.pm!r}"
                )
        clash = {DPO_RUN, *self.controls} & {*self.losses, *rows}
        if clash:
            raise ConfigError(
                f"{sorted(clash)}: a loss or row may not share a control's or dpo's name"
            )
        top_candidate = set()
        for variant in self.variants:  # unknown keys and bad values: now, not after hours
            overrides = [*self.calibration, *variant.overrides]
            data = apply_overrides({"decoding": dict(self.decoding)}, overrides)
            config = from_dict(CalibrationConfig, data, f"variants[{variant.name}]")
            if config.loss.mle_target == "top-candidate":
                top_candidate.add(variant.name)
        for row in self.rows:
            if row.loss in self.controls and row.variant in top_candidate and row.pm is None:
                raise ConfigError(
                    f"rows: {row.name}: variant {row.variant} trains on the top candidate "
                    "(loss.mle_target=top-candidate): a control row needs pm, the loss whose "
                    "preference model picks it"
                )

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    def answer_decoding(self) -> DecodingConfig:
        """How every generator answers the held-out contexts: ``eval_decoding`` over the
        answer-decoding defaults, with the study's seed."""
        settings = {**ANSWER_DECODING, **self.eval_decoding, "seed": self.seed}
        return from_dict(DecodingConfig, settings, "eval_decoding")

    def variant(self, name: str) -> VariantSpec:
        return next(v for v in self.variants if v.name == name)

    def dpo_peer(self) -> DPOPeerSpec | None:
        """The DPO peer's spec (None: no DPO peer)."""
        if self.dpo is None:
            return None
        spec = from_dict(DPOPeerSpec, self.dpo, "dpo")
        if spec.pm not in self.losses:
            raise ConfigError(f"dpo.pm must be one of the losses {self.losses}, got {spec.pm!r}")
        for item in spec.overrides:
            key = str(item).split("=", 1)[0].strip().lstrip("-")
            if key.split(".")[0] in FIXED_DPO_KEYS:
                raise ConfigError(f"dpo.overrides: {key} is set by the study ({FIXED_DPO_KEYS})")
        from_dict(DPOConfig, apply_overrides({"pairs": "pairs.jsonl"}, spec.overrides), "dpo")
        return spec

    def best_of_k_spec(self) -> BestOfKSpec | None:
        """The evaluation contexts' candidates (None: no best-of-K, no ranking on them)."""
        return (
            None if self.best_of_k is None else from_dict(BestOfKSpec, self.best_of_k, "best_of_k")
        )

    def eval_search(self) -> DecodingConfig:
        """The evaluation contexts' candidate search: the training candidates' (the study's
        ``decoding`` under its ``calibration`` overrides) with ``best_of_k.decoding`` on top."""
        spec = self.best_of_k_spec()
        training = from_dict(
            CalibrationConfig, apply_overrides({"decoding": dict(self.decoding)}, self.calibration)
        )
        decoding = {**to_dict(training)["decoding"], **(spec.decoding if spec else {})}
        return from_dict(DecodingConfig, decoding, "best_of_k.decoding")


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


def study_calibration_config(
    study: CalibrationStudyConfig,
    task: TaskSpec,
    name: str,
    scorer_run: str | None,
    cache: Path,
    overrides: list[str] | None = None,
) -> CalibrationConfig:
    """One calibration run of the study: its settings, then the study's ``calibration``
    overrides, then ``overrides``; ``scorer_run`` ranks the candidates cached at ``cache``."""
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
    return from_dict(
        CalibrationConfig, apply_overrides(data, [*study.calibration, *(overrides or [])])
    )


def task_dir(study: CalibrationStudyConfig, task: TaskSpec) -> Path:
    """``<output_dir>/<study>/<task>``: every step of ``task``."""
    return study.study_dir / task.name


def generation_config(study: CalibrationStudyConfig, task: TaskSpec) -> CalibrationConfig:
    """The candidate search, shared by every loss: no scorer (the generator's own ranking)."""
    cache = task_dir(study, task) / "candidates" / "generated.jsonl"
    config = study_calibration_config(study, task, "candidates", None, cache)
    return dataclasses.replace(config, output_dir=str(cache.parent.parent))


def calibration_config(
    study: CalibrationStudyConfig, task: TaskSpec, loss: str
) -> CalibrationConfig:
    """The generator calibrated on ``loss``'s ranking (``calibrated/<loss>``), its candidates
    re-scored by ``pm/<loss>`` into ``candidates/<loss>.jsonl``."""
    pm_dir = task_dir(study, task) / "pm" / loss
    cache = task_dir(study, task) / "candidates" / f"{loss}.jsonl"
    return study_calibration_config(study, task, loss, str(pm_dir), cache)


def control_config(
    study: CalibrationStudyConfig, task: TaskSpec, control: str
) -> CalibrationConfig:
    """A control calibration: the study's settings, no preference model, :data:`CONTROLS`'
    overrides last (the shared candidates are read but, with the ranking off, not forwarded)."""
    config = generation_config(study, task)
    data = to_dict(config)
    data.update(name=control, output_dir=str(task_dir(study, task) / "calibrated"))
    return from_dict(CalibrationConfig, apply_overrides(data, CONTROLS[control]))
