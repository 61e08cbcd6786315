"""The end-to-end calibration study (issue 4): does calibrating a generator on a preference
model's ranking make it better, and which loss gives the preference model that helps most?

Per task (``synthetic``: emotional-support contexts judged by the known oracle; ``convabuse``:
conversations judged by a separately trained preference model that never ranks), the recipe in
:func:`run_calibration_study`, every step cached and resumable under
``<output_dir>/<study>/<task>/``:

1. ``pm/<loss>``: one preference model per loss (:func:`bayespref.train.train`, the same
   cell logic as the loss study: skipped when finished with the same config, resumed when
   interrupted); ``pm/judge-<loss>-seed<k>`` for a preference-model judge.
2. ``candidates/generated.jsonl``: ``K`` diverse-beam candidates per training context from the
   base generator, generated once (:func:`~bayespref.calibration.build_candidates` with no
   scorer: ranked by the generator's own beam score); ``candidates/<loss>.jsonl``: the same
   texts re-scored and ranked by each preference model
   (:func:`~bayespref.calibration.rescore_candidates`), in the candidate format that
   ``calibrate`` and ``export-pairs`` read.
3. ``calibrated/<loss>``: the generator calibrated on that ranking
   (:func:`~bayespref.calibration.calibrate`).
4. ``eval/``: held-out contexts answered greedily (same seed) by the base generator once and
   by each calibrated generator (outputs cached), judged, and compared pairwise
   (:func:`~bayespref.generator_eval.compare_outputs`); plus each preference model's ranking
   quality on the shared candidates against the judge's ranking of the same texts
   (:func:`ranking_quality`).
5. ``report.md``, ``report.json`` and plots in ``<output_dir>/<study>/``.

The acceptance test of the issue (:func:`acceptance`): the best calibrated generator beats the
base by more than the 95% interval of the paired utility difference (its lower bound > 0)
while its gold perplexity rises by at most ``max_perplexity_rise`` (10%).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from .calibration import (
    CalibrationConfig,
    ContextsConfig,
    build_candidates,
    calibrate,
    load_contexts,
    read_candidates,
    rescore_candidates,
    split_contexts,
)
from .config import ConfigError, TrainConfig, _field, apply_overrides, from_dict, load_config
from .config import to_dict as config_to_dict
from .study import StudyError, git_commit, run_status  # noqa: F401  (StudyError: raised by run_status)

logger = logging.getLogger(__name__)

TIE_TOLERANCES = (1e-6, 1e-3)

# Control calibrations: what the same run does without a preference model. ``mle-only`` trains on
# the same contexts with the ranking and gold terms off (rank_weight = gold_weight = 0), so the
# losses' generators can be compared with what MLE on the gold replies alone buys.
CONTROLS = {"mle-only": ["loss.rank_weight=0", "loss.gold_weight=0"]}
CONTROL_TEXT = {"mle-only": "the same calibration with the ranking and gold terms off"}


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class TaskSpec:
    name: str = _field("synthetic", "task folder name")
    pm_config: str = _field("configs/synthetic.yaml", "training config of the preference models")
    pm_overrides: list = _field([], "key=value overrides of that config, for this task")
    contexts: dict = _field(
        {"source": "synthetic", "n": 104, "seed": 1, "n_eval": 8},
        "training contexts (calibration's data section: candidates + calibration; n_eval of "
        "them held out for the gold NLL logged during calibration)",
    )
    eval_contexts: dict = _field(
        {"source": "synthetic", "n": 200, "seed": 4},
        "held-out evaluation contexts (same forms; contexts also in training are dropped)",
    )
    judge: str | dict = _field(
        "oracle", "'oracle' (synthetic) or {loss, seed}: a preference model trained apart"
    )
    rule: str = _field("expected-utility", "preference score rule of the rankers and the judge")

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
    name: str = _field("calibration-study", "study name: outputs go to <output_dir>/<name>/")
    output_dir: str = _field("runs", "parent folder of the study")
    seed: int = _field(0, "seed of candidate generation, calibration and evaluation decoding")
    pm_seed: int = _field(0, "seed of the ranking preference models")
    losses: list = _field(
        ["forward-kl", "reverse-kl", "jsd", "soft", "majority"], "one ranking PM per loss"
    )
    pm_overrides: list = _field([], "key=value overrides of every preference model")
    generator: dict = _field({}, "base generator (bayespref.lm.GeneratorConfig fields)")
    decoding: dict = _field({}, "candidate search (calibration's decoding section)")
    calibration: list = _field([], "key=value overrides of every calibration run (loss.*, ...)")
    eval_decoding: dict = _field(
        {"method": "greedy"}, "evaluation decoding (generator_eval.DecodingConfig fields)"
    )
    tasks: list = _field([], "[{name, pm_config, pm_overrides, contexts, eval_contexts, judge}]")
    max_perplexity_rise: float = _field(0.10, "acceptance: gold perplexity may rise this much")
    controls: list = _field(
        ["mle-only"], "control calibrations without a preference model (mle-only: gold MLE)"
    )
    quick: dict | str | None = _field(None, "--quick: keys replacing these, or a study file")

    def __post_init__(self):
        self.tasks = [
            t if isinstance(t, TaskSpec) else from_dict(TaskSpec, t, "tasks[]") for t in self.tasks
        ]
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
        from .generator_eval import DecodingConfig

        DecodingConfig(**self.eval_decoding)  # validated now, not after hours of training

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.name


def load_calibration_study(
    path: str | Path, quick: bool = False, overrides: list[str] | None = None
) -> CalibrationStudyConfig:
    """Read a study YAML; ``quick`` applies its ``quick`` section (replaced keys, or a path to a
    whole study file); ``overrides`` are dotted ``key=value`` study keys."""
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
        if isinstance(section, str):
            quick_path = path.parent / section
            quick_path = quick_path if quick_path.is_file() else Path(section)
            if not quick_path.is_file():
                raise ConfigError(f"{path}: quick study file not found: {section}")
            data = yaml.safe_load(quick_path.read_text(encoding="utf-8")) or {}
        else:
            data = {**data, **section}
    data.pop("quick", None)
    return from_dict(CalibrationStudyConfig, apply_overrides(data, overrides or []))


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


def judge_run_name(task: TaskSpec) -> str | None:
    if task.judge == "oracle":
        return None
    return f"judge-{task.judge['loss']}-seed{task.judge['seed']}"


def _calibration_config(
    study: CalibrationStudyConfig, task: TaskSpec, name: str, scorer_run: str | None, cache: Path
) -> CalibrationConfig:
    data = {
        "name": name,
        "output_dir": str(study.study_dir / task.name / "calibrated"),
        "seed": study.seed,
        "generator": dict(study.generator),
        "data": dict(task.contexts),
        "scorer": {"run": scorer_run, "rule": task.rule},
        "decoding": {**study.decoding, "cache": str(cache)},
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
    pm_dir = study.study_dir / task.name / "pm" / loss
    cache = study.study_dir / task.name / "candidates" / f"{loss}.jsonl"
    return _calibration_config(study, task, loss, str(pm_dir), cache)


def control_config(
    study: CalibrationStudyConfig, task: TaskSpec, control: str
) -> CalibrationConfig:
    """A control calibration: the study's settings, no preference model, :data:`CONTROLS`'
    overrides last (the shared candidates are read but, with the ranking off, not forwarded)."""
    config = generation_config(study, task)
    data = config_to_dict(config)
    data.update(name=control, output_dir=str(study.study_dir / task.name / "calibrated"))
    return from_dict(CalibrationConfig, apply_overrides(data, CONTROLS[control]))


# ---------------------------------------------------------------------------------------------
# Steps 1-3: preference models, candidates, calibration


def train_pm(config: TrainConfig) -> str:
    """Train one preference model unless finished; ``cached``, ``trained`` or ``resumed``."""
    from .train import train

    status = run_status(config)
    if status == "done":
        return "cached"
    logger.info("preference model %s: %s", config.run_dir, status)
    train(config, resume=status == "partial")
    return "resumed" if status == "partial" else "trained"


def calibration_status(config: CalibrationConfig) -> str:
    """``new``, ``partial`` (interrupted: resume) or ``done``; a different config is an error."""
    return run_status(config, finished=("summary.json", "generator"), what="calibration run")


def run_calibrations(
    study: CalibrationStudyConfig, task: TaskSpec, train_overrides: list[str] | None = None
) -> dict[str, int]:
    """Steps 1-3 of one task; returns counts of what was cached, trained, resumed."""
    outcome = {"cached": 0, "trained": 0, "resumed": 0}

    def count(what: str) -> None:
        outcome[what] += 1

    for loss in study.losses:
        count(train_pm(pm_config(study, task, loss, study.pm_seed, loss, train_overrides)))
    if task.judge != "oracle":
        judge = pm_config(
            study, task, task.judge["loss"], task.judge["seed"], judge_run_name(task),
            train_overrides,
        )  # fmt: skip
        count(train_pm(judge))
    generated = build_candidates(generation_config(study, task))
    for loss in study.losses:
        config = calibration_config(study, task, loss)
        rescore_candidates(config, generated)
        count(run_calibration(config))
    for control in study.controls:
        count(run_calibration(control_config(study, task, control)))
    return outcome


def run_calibration(config: CalibrationConfig) -> str:
    """Calibrate unless finished; ``cached``, ``trained`` or ``resumed``."""
    status = calibration_status(config)
    if status == "done":
        return "cached"
    logger.info("calibration %s: %s", config.run_dir, status)
    calibrate(config, resume=status == "partial")
    return "resumed" if status == "partial" else "trained"


# ---------------------------------------------------------------------------------------------
# Step 4: evaluation


def eval_items(study: CalibrationStudyConfig, task: TaskSpec) -> list[dict]:
    """The held-out contexts: the task's eval contexts minus any that are training contexts."""
    train_data = from_dict(ContextsConfig, task.contexts)
    train_rows = load_contexts(train_data)
    seen = {json.dumps(r["context"]) for r in train_rows}
    rows = load_contexts(from_dict(ContextsConfig, task.eval_contexts))
    kept = [r for r in rows if json.dumps(r["context"]) not in seen]
    if len(kept) < len(rows):
        logger.info(
            "%s: %d evaluation contexts also train: dropped", task.name, len(rows) - len(kept)
        )
    return kept


def load_task_judge(study: CalibrationStudyConfig, task: TaskSpec):
    from .generator_eval import OracleJudge, PreferenceModelJudge

    if task.judge == "oracle":
        return OracleJudge()
    return PreferenceModelJudge(
        study.study_dir / task.name / "pm" / judge_run_name(task), rule=task.rule
    )


def _sha(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _outputs_to_json(outputs) -> dict:
    from .generator_eval import _json_safe

    return _json_safe(
        {
            "name": outputs.name,
            "texts": outputs.texts,
            "lengths": outputs.lengths,
            "gold_nll": outputs.gold_nll.tolist(),
            "gold_tokens": outputs.gold_tokens.tolist(),
        }
    )


def _outputs_from_json(data: dict):
    from .generator_eval import GeneratorOutputs

    nll = np.array([math.nan if v is None else v for v in data["gold_nll"]], dtype=np.float64)
    return GeneratorOutputs(
        data["name"],
        data["texts"],
        data["lengths"],
        nll,
        np.array(data["gold_tokens"], dtype=np.int64),
    )


def cached_outputs(
    path: Path, key: dict, generator_spec: Any, items: list[dict], decoding, name: str
) -> tuple[Any, bool]:
    """A generator's answers and gold NLLs on ``items``, from ``path`` when its key matches."""
    from .generator_eval import run_generator

    fingerprint = _sha(key)
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") == fingerprint:
            return _outputs_from_json(data["outputs"]), True
    outputs = run_generator(generator_spec, items, decoding, name=name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    payload = {"key": fingerprint, "settings": key, "outputs": _outputs_to_json(outputs)}
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(path)
    return outputs, False


def ranking_quality(rows: list[dict], judge_scores: dict[tuple[str, str], float]) -> dict:
    """How a preference model ranks the shared candidates, and how that agrees with the judge.

    Per candidate set with at least two distinct texts: the gap between the top two scores
    (a tie below 1e-6 or 1e-3 gives calibration's ranking loss nothing to learn from), the
    spread (best - worst score), the Spearman correlation between the model's and the judge's
    scores of the same texts (sets where either is constant are left out), whether the model's
    top text is among the judge's best, and the fraction of text pairs both order the same way
    (pairs either ties left out). Returns the means and counts.
    """
    from scipy.stats import spearmanr

    ties = {tol: 0 for tol in TIE_TOLERANCES}
    spreads, spearman, top1 = [], [], []
    concordant = discordant = 0
    n_sets = 0
    for row in rows:
        cands = row["candidates"]
        if len(cands) < 2:
            continue
        n_sets += 1
        pm = np.array([c["score"] for c in cands], dtype=np.float64)
        judge = np.array([judge_scores[(row["id"], c["text"])] for c in cands], dtype=np.float64)
        top_two = np.sort(pm)[::-1][:2]
        for tol in TIE_TOLERANCES:
            ties[tol] += int(top_two[0] - top_two[1] < tol)
        spreads.append(float(pm.max() - pm.min()))
        if np.ptp(pm) > 0 and np.ptp(judge) > 0:
            spearman.append(float(spearmanr(pm, judge).statistic))
        top1.append(float(judge[int(np.argmax(pm))] >= judge.max() - 1e-9))
        for i in range(len(cands)):
            for j in range(i + 1, len(cands)):
                d_pm, d_judge = pm[i] - pm[j], judge[i] - judge[j]
                if abs(d_pm) > 1e-6 and abs(d_judge) > 1e-6:
                    if (d_pm > 0) == (d_judge > 0):
                        concordant += 1
                    else:
                        discordant += 1
    pairs = concordant + discordant
    return {
        "sets": n_sets,
        "sets_total": len(rows),
        "top2_tie_1e-6": ties[1e-6] / n_sets if n_sets else math.nan,
        "top2_tie_1e-3": ties[1e-3] / n_sets if n_sets else math.nan,
        "mean_spread": float(np.mean(spreads)) if spreads else math.nan,
        "spearman": float(np.mean(spearman)) if spearman else math.nan,
        "spearman_sets": len(spearman),
        "top1_agreement": float(np.mean(top1)) if top1 else math.nan,
        "pairwise_agreement": concordant / pairs if pairs else math.nan,
        "pairs": pairs,
    }


def judge_candidate_scores(judge, rows: list[dict], cache: Path) -> dict[tuple[str, str], float]:
    """The judge's utility of every distinct (context, candidate text), cached."""
    wanted = sorted({(r["id"], c["text"]) for r in rows for c in r["candidates"]})
    key = _sha([getattr(judge, "name", "judge"), wanted])
    if cache.is_file():
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("key") == key:
            return {(i, t): s for i, t, s in data["scores"]}
    context = {r["id"]: r["context"] for r in rows}
    utilities = judge.utilities([context[i] for i, _ in wanted], [t for _, t in wanted])
    scores = {pair: float(u) for pair, u in zip(wanted, utilities, strict=True)}
    cache.parent.mkdir(parents=True, exist_ok=True)
    payload = {"key": key, "scores": [[i, t, s] for (i, t), s in scores.items()]}
    cache.write_text(json.dumps(payload), encoding="utf-8")
    return scores


def evaluate_task(study: CalibrationStudyConfig, task: TaskSpec) -> dict:
    """Step 4 of one task: generator comparisons and ranking quality, per finished loss."""
    from .generator_eval import DecodingConfig, compare_outputs
    from .lm import GeneratorConfig

    task_dir = study.study_dir / task.name
    decoding = DecodingConfig(**{**study.eval_decoding, "seed": study.seed})
    items = eval_items(study, task)
    ids_sha = _sha([r["id"] for r in items])
    judge = load_task_judge(study, task)
    base_config = from_dict(GeneratorConfig, study.generator)
    base_key = {
        "generator": config_to_dict(base_config),
        "decoding": dataclasses.asdict(decoding),
        "items": ids_sha,
    }
    base_out, _ = cached_outputs(
        task_dir / "eval" / "base.outputs.json", base_key, base_config, items, decoding, "base"
    )
    result = {"n": len(items), "judge": getattr(judge, "name", "judge"), "losses": {}}
    train_rows, _ = split_contexts(
        load_contexts(from_dict(ContextsConfig, task.contexts)),
        from_dict(ContextsConfig, task.contexts),
        study.seed,
    )
    result["train_contexts"] = len(train_rows)
    result["controls"] = {}

    def evaluate(config: CalibrationConfig, name: str):
        """The calibrated generator's outputs and its report against the base; None if the
        calibration has not finished."""
        summary_file = config.run_dir / "summary.json"
        if not summary_file.is_file():
            logger.warning("%s/%s: no calibrated generator yet: left out", task.name, name)
            return None, None
        gen_config = dataclasses.replace(base_config, name=str(config.run_dir), gguf_file=None)
        key = {**base_key, "generator": config_to_dict(gen_config)}
        key["calibration"] = hashlib.sha256(summary_file.read_bytes()).hexdigest()
        cal_out, _ = cached_outputs(
            task_dir / "eval" / f"{name}.outputs.json", key, gen_config, items, decoding, name
        )
        report = compare_outputs(base_out, cal_out, items, judge, decoding, num_examples=3)
        report.pop("items")
        calibration_summary = json.loads(summary_file.read_text(encoding="utf-8"))
        report["calibration"] = {
            k: calibration_summary.get(k)
            for k in ("steps", "train_contexts", "initial_eval_gold_nll", "final_eval_gold_nll")
        }
        base_ppl, cal_ppl = (
            report["base"]["gold_perplexity"],
            report["calibrated"]["gold_perplexity"],
        )
        report["perplexity_change"] = cal_ppl / base_ppl - 1 if base_ppl else math.nan
        return cal_out, report

    control_outputs = {}
    for control in study.controls:
        out, report = evaluate(control_config(study, task, control), control)
        if report is not None:
            control_outputs[control] = out
            result["controls"][control] = report
            _write_json(task_dir / "eval" / f"{control}.json", report)
    for loss in study.losses:
        config = calibration_config(study, task, loss)
        cal_out, report = evaluate(config, loss)
        if report is None:
            continue
        _, rows = read_candidates(config.candidates_path)
        judge_scores = judge_candidate_scores(judge, rows, task_dir / "eval" / "judge_scores.json")
        report["ranking"] = ranking_quality(rows, judge_scores)
        # Paired against each control on the same contexts: what the ranking adds to the MLE.
        report["vs_controls"] = {
            control: compare_outputs(out, cal_out, items, judge, decoding, num_examples=0)["paired"]
            for control, out in control_outputs.items()
        }
        result["losses"][loss] = report
        _write_json(task_dir / "eval" / f"{loss}.json", report)
    reports = [*result["losses"].values(), *result["controls"].values()]
    result["base"] = reports[0]["base"] if reports else None
    result["gold_utility"] = reports[0]["gold_utility"] if reports else None
    return result


# ---------------------------------------------------------------------------------------------
# Step 5: conclusions, plots, report


def acceptance(task_result: dict, max_rise: float) -> dict:
    """Best loss by mean paired utility difference; whether it (and which losses) pass: the
    interval's lower bound above 0 and gold perplexity up by at most ``max_rise``."""
    losses = task_result["losses"]
    if not losses:
        return {"best": None, "passing": [], "accepted": False}
    diff = {k: r["paired"]["utility_difference"] for k, r in losses.items()}
    ranked = sorted(diff, key=lambda k: -(diff[k]["mean"] if _finite(diff[k]["mean"]) else -1e9))
    passing = [
        k
        for k in ranked
        if _finite(diff[k]["low"])
        and diff[k]["low"] > 0
        and _finite(losses[k]["perplexity_change"])
        and losses[k]["perplexity_change"] <= max_rise
    ]
    best = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    return {
        "best": best,
        "best_difference": diff[best],
        "runner_up": runner_up,
        "margin_over_runner_up": (
            diff[best]["mean"] - diff[runner_up]["mean"] if runner_up else None
        ),
        "passing": passing,
        "accepted": best in passing,
    }


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _fmt(x: Any, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if _finite(x) else "-"


def _ci(d: dict, digits: int = 4) -> str:
    return f"{_fmt(d['mean'], digits)} [{_fmt(d['low'], digits)}, {_fmt(d['high'], digits)}]"


def write_plots(study: CalibrationStudyConfig, results: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots_dir = study.study_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    tasks = [t for t in results if results[t]["losses"]]
    if not tasks:
        return []
    out = []
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        generators = {**results[task]["losses"], **results[task].get("controls", {})}
        losses = list(generators)
        d = [generators[k]["paired"]["utility_difference"] for k in losses]
        means = np.array([x["mean"] for x in d], dtype=float)
        low = np.array([x["low"] if _finite(x["low"]) else x["mean"] for x in d], dtype=float)
        high = np.array([x["high"] if _finite(x["high"]) else x["mean"] for x in d], dtype=float)
        ax.errorbar(range(len(losses)), means, yerr=[means - low, high - means], fmt="o", capsize=4)
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        labels = [k if k in results[task]["losses"] else f"{k} (control)" for k in losses]
        ax.set_xticks(range(len(losses)), labels, rotation=30, ha="right")
        ax.set_title(f"{task}: utility, calibrated - base (95% CI)")
        ax.set_ylabel("paired utility difference")
    out.append(_save(fig, plots_dir / "utility_difference.png"))

    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        losses = list(results[task]["losses"])
        width = 0.27
        for i, (key, label) in enumerate(
            [
                ("spearman", "Spearman vs judge"),
                ("top1_agreement", "top-1 agreement"),
                ("top2_tie_1e-3", "top-2 tie (<1e-3)"),
            ]
        ):
            values = [results[task]["losses"][k]["ranking"][key] for k in losses]
            values = [v if _finite(v) else 0.0 for v in values]
            ax.bar(np.arange(len(losses)) + (i - 1) * width, values, width, label=label)
        ax.set_xticks(range(len(losses)), losses, rotation=30, ha="right")
        ax.set_title(f"{task}: PM ranking of the shared candidates")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.legend(fontsize=7)
    out.append(_save(fig, plots_dir / "ranking_agreement.png"))
    return out


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    study: CalibrationStudyConfig, results: dict, plots: list[Path], command: str | None
) -> Path:
    """``report.md``: per task, the generator table, the ranking table and the conclusion."""
    lines = [f"# Calibration study: {study.name}", ""]
    lines += [
        f"- command: `{command or '(python API)'}`",
        f"- git commit: `{git_commit()}`",
        f"- base generator: `{study.generator.get('name', 'smollm2-135m-instruct')}`; "
        f"losses: {', '.join(study.losses)}",
        f"- evaluation decoding: {study.eval_decoding}, seed {study.seed}",
        f"- acceptance: the paired utility difference's 95% interval above 0 and gold "
        f"perplexity up by at most {study.max_perplexity_rise:.0%}",
        "",
    ]
    for task in study.tasks:
        res = results.get(task.name)
        if res is None:
            continue
        acc = res["acceptance"]
        lines += [
            f"## {task.name}",
            "",
            f"{res['n']} held-out contexts, {res['train_contexts']} training contexts; "
            f"judge: {res['judge']}.",
            "",
            "| generator | utility ↑ (95% CI) | Δ utility vs base ↑ (95% CI) | win rate ↑ "
            "(95% Wilson) | gold ppl ↓ | Δ ppl | BLEU ↑ | ROUGE-L ↑ | distinct-1 ↑ | "
            "distinct-2 ↑ | length |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        if res["base"] is not None:
            b = res["base"]
            lines.append(
                f"| base | {_ci(b['utility'])} | - | - | {_fmt(b['gold_perplexity'], 2)} | - | "
                f"{_fmt(b['bleu'], 2)} | {_fmt(b['rouge_l'])} | {_fmt(b['distinct_1'])} | "
                f"{_fmt(b['distinct_2'])} | {_fmt(b['mean_length'], 1)} |"
            )
        rows = [*res["losses"].items()]
        rows += [(f"{k} (control)", r) for k, r in res.get("controls", {}).items()]
        for loss, r in rows:
            c, w = r["calibrated"], r["paired"]["win_rate"]
            change = r["perplexity_change"]
            lines.append(
                f"| {loss} | {_ci(c['utility'])} | {_ci(r['paired']['utility_difference'])} | "
                f"{_fmt(w['rate'], 3)} [{_fmt(w['low'], 3)}, {_fmt(w['high'], 3)}] | "
                f"{_fmt(c['gold_perplexity'], 2)} | "
                f"{(f'{change:+.1%}' if _finite(change) else '-')} | {_fmt(c['bleu'], 2)} | "
                f"{_fmt(c['rouge_l'])} | {_fmt(c['distinct_1'])} | {_fmt(c['distinct_2'])} | "
                f"{_fmt(c['mean_length'], 1)} |"
            )
        missing = [loss for loss in study.losses if loss not in res["losses"]]
        missing += [c for c in study.controls if c not in res.get("controls", {})]
        if missing:
            lines.append(f"\nNot finished (left out): {', '.join(missing)}.")
        gold = res.get("gold_utility")
        if gold and _finite(gold.get("mean")):
            lines += ["", f"The gold replies' own utility under this judge: {_ci(gold)}."]
        for control in res.get("controls", {}):
            lines += [
                "",
                f"Each loss's generator against the `{control}` control ({CONTROL_TEXT[control]}), "
                "paired on the same contexts: what the preference model's ranking adds.",
                "",
                f"| loss | Δ utility vs {control} ↑ (95% CI) | win rate vs {control} ↑ "
                "(95% Wilson) |",
                "|---|---|---|",
            ]
            for loss, r in res["losses"].items():
                v = r.get("vs_controls", {}).get(control)
                if v is None:
                    continue
                w = v["win_rate"]
                lines.append(
                    f"| {loss} | {_ci(v['utility_difference'])} | {_fmt(w['rate'], 3)} "
                    f"[{_fmt(w['low'], 3)}, {_fmt(w['high'], 3)}] |"
                )
        lines += [
            "",
            "Ranking of the shared candidates by each loss's preference model, against the "
            "judge's ranking of the same texts:",
            "",
            "| loss | sets | top-2 tie <1e-6 | top-2 tie <1e-3 | mean spread | Spearman vs judge "
            "| top-1 agreement | pairwise agreement |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for loss, r in res["losses"].items():
            q = r["ranking"]
            lines.append(
                f"| {loss} | {q['sets']}/{q['sets_total']} | {_fmt(q['top2_tie_1e-6'], 3)} | "
                f"{_fmt(q['top2_tie_1e-3'], 3)} | {_fmt(q['mean_spread'])} | "
                f"{_fmt(q['spearman'], 3)} ({q['spearman_sets']} sets) | "
                f"{_fmt(q['top1_agreement'], 3)} | {_fmt(q['pairwise_agreement'], 3)} |"
            )
        lines += ["", _conclusion(task.name, acc, res, study.max_perplexity_rise), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    path = study.study_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _conclusion(task: str, acc: dict, res: dict, max_rise: float) -> str:
    if acc["best"] is None:
        return f"**{task}**: no calibrated generator finished yet."
    best, d = acc["best"], acc["best_difference"]
    change = res["losses"][best]["perplexity_change"]
    text = (
        f"**{task}**: the best generator comes from `{best}` (utility difference "
        f"{_ci(d)}; gold perplexity {change:+.1%})"
        if _finite(change)
        else f"**{task}**: the best generator comes from `{best}` (utility difference {_ci(d)})"
    )
    if acc["runner_up"] is not None and acc["margin_over_runner_up"] == 0:
        text += f", tied with `{acc['runner_up']}`"
    elif acc["runner_up"] is not None:
        text += f", {_fmt(acc['margin_over_runner_up'])} above `{acc['runner_up']}`"
    text += ". "
    if acc["accepted"]:
        text += (
            f"It beats the base by more than the interval with gold perplexity up by at most "
            f"{max_rise:.0%}: **acceptance met**."
        )
    else:
        why = []
        if not (_finite(d["low"]) and d["low"] > 0):
            why.append("the interval of its utility difference reaches 0 or below")
        if not (_finite(change) and change <= max_rise):
            why.append(f"its gold perplexity rose by more than {max_rise:.0%}")
        text += f"**Acceptance not met** ({'; '.join(why)})."
    if acc["passing"]:
        text += f" Losses that pass: {', '.join(acc['passing'])}."
    for control, v in res["losses"][best].get("vs_controls", {}).items():
        d = v["utility_difference"]
        if _finite(d["low"]) and d["low"] > 0:
            verdict = "the ranking adds utility beyond the interval"
        elif _finite(d["high"]) and d["high"] < 0:
            verdict = "the control is better beyond the interval"
        else:
            verdict = "no difference beyond the interval: the ranking adds nothing measurable"
        text += f" Against the `{control}` control: {_ci(d)} ({verdict})."
    return text


def _write_json(path: Path, payload: Any) -> None:
    from .generator_eval import _json_safe

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(payload), indent=2), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# The recipe


@dataclasses.dataclass
class CalibrationStudyResult:
    study_dir: Path
    report: Path
    plots: list[Path]
    results: dict
    outcome: dict


def run_calibration_study(
    study: CalibrationStudyConfig,
    report_only: bool = False,
    train_overrides: list[str] | None = None,
    command: str | None = None,
) -> CalibrationStudyResult:
    """Train, generate, calibrate and evaluate every unfinished step; write the report.

    ``train_overrides`` go to every preference model (after the study's own). With
    ``report_only`` nothing is trained or generated: finished calibrations are evaluated
    (generator outputs still decode if not cached) and reported.
    """
    study.study_dir.mkdir(parents=True, exist_ok=True)
    (study.study_dir / "study.yaml").write_text(
        yaml.safe_dump(json.loads(json.dumps(dataclasses.asdict(study), default=str))),
        encoding="utf-8",
    )
    outcome = {"cached": 0, "trained": 0, "resumed": 0}
    results = {}
    for task in study.tasks:
        if not report_only:
            for key, value in run_calibrations(study, task, train_overrides).items():
                outcome[key] += value
        results[task.name] = evaluate_task(study, task)
        results[task.name]["acceptance"] = acceptance(results[task.name], study.max_perplexity_rise)
    plots = write_plots(study, results)
    report = write_report(study, results, plots, command)
    _write_json(
        study.study_dir / "report.json",
        {"command": command, "git_commit": git_commit(), "outcome": outcome, "tasks": results},
    )
    logger.info("calibration study %s: %s; report %s", study.name, outcome, report)
    return CalibrationStudyResult(study.study_dir, report, plots, results, outcome)


# ---------------------------------------------------------------------------------------------
# Command line


def main(args: argparse.Namespace) -> int:
    """Handler of ``bayespref calibration-study``."""
    study = load_calibration_study(args.config, quick=args.quick, overrides=list(args.set))
    command = "bayespref " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    result = run_calibration_study(
        study, report_only=args.report_only, train_overrides=list(args.overrides), command=command
    )
    # the CLI handler reports its result (library code above only logs)
    for task, res in result.results.items():
        acc = res["acceptance"]
        verdict = "met" if acc["accepted"] else "not met"
        print(f"{task}: best loss {acc['best']}, acceptance {verdict}")  # noqa: T201
    print(f"report: {result.report}  ({result.outcome})")  # noqa: T201
    return 0


def make_parser(subparsers: Any = None) -> argparse.ArgumentParser:
    """The ``calibration-study`` parser, added to ``subparsers`` when given (TRL style)."""
    description = (
        "End-to-end calibration study: a preference model per loss ranks shared candidates, "
        "a generator is calibrated per loss and judged against the base -> report.md"
    )
    if subparsers is not None:
        parser = subparsers.add_parser(
            "calibration-study", help=description, description=description
        )
    else:
        parser = argparse.ArgumentParser(
            prog="bayespref calibration-study", description=description
        )
    parser.add_argument(
        "--config", required=True, help="study YAML (e.g. configs/calibration-study.yaml)"
    )
    parser.add_argument("--quick", action="store_true", help="the study's quick section")
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing; report finished steps"
    )
    parser.add_argument(
        "--set", action="append", default=[], help="study key=value override (repeatable)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="key=value overrides of every preference model"
    )
    parser.set_defaults(func=main)
    return parser


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main(make_parser().parse_args()))
