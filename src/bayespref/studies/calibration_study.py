"""The end-to-end calibration study (issue 4): does calibrating a generator on a preference
model's ranking make it better, and which loss gives the preference model that helps most?

Per task (``synthetic``: emotional-support contexts judged by the known oracle; ``convabuse``:
conversations judged by a separately trained preference model that never ranks), the recipe in
:func:`run_calibration_study`, every step cached and resumable under
``<output_dir>/<study>/<task>/`` (each step's config: :mod:`.calibration_study_config`):

1. ``pm/<loss>``: one preference model per loss (:func:`bayespref.train.train`, the same
   cached-step logic as the loss study, :func:`.common.run_status`: skipped when finished with
   the same config, resumed when interrupted); ``pm/judge-<loss>-seed<k>`` for a
   preference-model judge.
2. ``candidates/generated.jsonl``: ``K`` diverse-beam candidates per training context from the
   base generator, generated once (:func:`~bayespref.calibration.build_candidates` with no
   scorer: ranked by the generator's own beam score); ``candidates/<loss>.jsonl``: the same
   texts re-scored and ranked by each preference model
   (:func:`~bayespref.calibration.rescore_candidates`), in the candidate format that
   ``calibrate`` and ``export-pairs`` read.
3. ``calibrated/<loss>``: the generator calibrated on that ranking
   (:func:`~bayespref.calibration.calibrate`); ``calibrated/<control>``: the controls;
   ``calibrated/<loss>+<variant>``: the sweep rows (a named variant's calibration settings);
   ``calibrated/dpo``: the DPO peer at a calibration's budget (:mod:`.calibration_peers`);
   ``eval/candidates/``: the evaluation contexts' candidates, for best-of-K.
4. ``eval/``: held-out contexts answered (same decoding and seed) by the base generator once and
   by each calibrated generator (outputs cached), judged, and compared pairwise with the base
   and with each control (:func:`~bayespref.generator_eval.compare_outputs`); the best-of-K
   picks judged and paired the same way; each preference model's ranking quality on the shared
   candidates against the judge's ranking of the same texts (:func:`ranking_quality`); each
   generator's own ranking accuracy on the evaluation contexts' candidates.
5. ``report.md``, ``report.json`` and plots in ``<output_dir>/<study>/``
   (:mod:`.calibration_report`, with the acceptance test :func:`.calibration_report.acceptance`
   and the one table of every generator with issue 13's verdict, :mod:`.calibration_table`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from ..annotate_synthetic import AnnotateSyntheticConfig, annotate_synthetic
from ..calibration import (
    CalibrationConfig,
    ContextsConfig,
    build_candidates,
    calibrate,
    load_contexts,
    read_candidates,
    rescore_candidates,
)
from ..config import DecodingConfig, TrainConfig, from_dict, load_yaml, to_dict
from ..generator_eval import GeneratorOutputs, compare_outputs, json_safe, run_generator
from ..judges import Judge, OracleJudge, PreferenceModelJudge
from ..lm import GeneratorConfig
from ..train import train
from .calibration_peer_configs import dpo_config, sweep_config, sweep_generation_config
from .calibration_peers import (
    build_eval_candidates,
    evaluate_on_eval_candidates,
    judge_candidate_scores,
    run_dpo_peer,
    train_context_count,
)
from .calibration_report import acceptance, write_plots, write_report
from .calibration_study_config import (
    DPO_RUN,
    CalibrationStudyConfig,
    TaskSpec,
    calibration_config,
    control_config,
    generation_config,
    judge_run_name,
    pm_config,
    split_row_name,
)
from .calibration_table import ranking_acceptance, table_rows
from .common import (
    empty_outcome,
    git_commit,
    run_status,
    run_unless_done,
    save_study_record,
    sha256_file,
    sha256_json,
    write_json,
)

logger = logging.getLogger(__name__)

TIE_TOLERANCES = (1e-6, 1e-3)


# ---------------------------------------------------------------------------------------------
# Steps 1-3: preference models, candidates, calibration


def train_pm(config: TrainConfig) -> str:
    """Train one preference model unless finished; ``cached``, ``trained`` or ``resumed``."""
    status = run_status(config)
    if status != "done":
        logger.info("preference model %s: %s", config.run_dir, status)
    return run_unless_done(status, train, config)


def calibration_status(config: CalibrationConfig) -> str:
    """``new``, ``partial`` (interrupted: resume) or ``done``; a different config is an error."""
    return run_status(config, finished=("summary.json", "generator"), what="calibration run")


def run_calibration(config: CalibrationConfig) -> str:
    """Calibrate unless finished; ``cached``, ``trained`` or ``resumed``."""
    status = calibration_status(config)
    if status != "done":
        logger.info("calibration %s: %s", config.run_dir, status)
    return run_unless_done(status, calibrate, config)


def run_calibrations(
    study: CalibrationStudyConfig, task: TaskSpec, train_overrides: list[str] | None = None
) -> dict[str, int]:
    """Steps 1-3 of one task, the sweep rows and the peers (the DPO run, the evaluation
    contexts' candidates); returns counts of what was cached, trained, resumed."""
    outcome = empty_outcome()

    def count(what: str) -> None:
        outcome[what] += 1

    if task.annotate is not None:  # the preference models' data: the generator's own replies
        annotate = load_yaml(AnnotateSyntheticConfig, task.annotate)
        logger.info("%s: annotated replies in %s", task.name, annotate.out_dir)
        annotate_synthetic(annotate, commit=git_commit())
    for loss in study.losses:
        count(train_pm(pm_config(study, task, loss, study.pm_seed, loss, train_overrides)))
    if isinstance(task.judge, dict):  # a preference-model judge, trained apart (else the oracle)
        judge = task.judge
        judge_config = pm_config(
            study, task, judge["loss"], judge["seed"], judge_run_name(judge), train_overrides
        )
        count(train_pm(judge_config))
    generated = build_candidates(generation_config(study, task))
    for loss in study.losses:
        config = calibration_config(study, task, loss)
        rescore_candidates(config, generated)
        count(run_calibration(config))
    for control in study.controls:
        count(run_calibration(control_config(study, task, control)))
    for row in study.rows:
        if not row.runs_on(task.name):
            continue
        config = sweep_config(study, task, row)
        if row.loss not in study.controls or row.pm:  # a plain control ranks nothing
            search = sweep_generation_config(study, task, row)  # a variant with its own search
            rescore_candidates(config, build_candidates(search) if search else generated)
        count(run_calibration(config))
    if study.dpo is not None:
        count(run_dpo_peer(study, task))
    spec = study.best_of_k_spec()
    if spec is not None and spec.runs_on(task.name):
        build_eval_candidates(study, task, eval_items(study, task))
    return outcome


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


def load_task_judge(study: CalibrationStudyConfig, task: TaskSpec) -> Judge:
    """The task's judge: the synthetic oracle, or the preference model ``pm/judge-*``."""
    if not isinstance(task.judge, dict):
        return OracleJudge()
    return PreferenceModelJudge(
        study.study_dir / task.name / "pm" / judge_run_name(task.judge), rule=task.rule
    )


def _outputs_to_json(outputs: GeneratorOutputs) -> dict:
    return json_safe(
        {
            "name": outputs.name,
            "texts": outputs.texts,
            "lengths": outputs.lengths,
            "gold_nll": outputs.gold_nll.tolist(),
            "gold_tokens": outputs.gold_tokens.tolist(),
        }
    )


def _outputs_from_json(data: dict) -> GeneratorOutputs:
    nll = np.array([math.nan if v is None else v for v in data["gold_nll"]], dtype=np.float64)
    return GeneratorOutputs(
        data["name"],
        data["texts"],
        data["lengths"],
        nll,
        np.array(data["gold_tokens"], dtype=np.int64),
    )


def cached_outputs(
    path: Path,
    key: dict,
    generator_spec: Any,
    items: list[dict],
    decoding: DecodingConfig,
    name: str,
) -> tuple[GeneratorOutputs, bool]:
    """A generator's answers and gold NLLs on ``items``, from ``path`` when its key matches;
    ``True`` with them when they came from the cache."""
    fingerprint = sha256_json(key)
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("key") == fingerprint:
            return _outputs_from_json(data["outputs"]), True
    outputs = run_generator(generator_spec, items, decoding, name=name)
    payload = {"key": fingerprint, "settings": key, "outputs": _outputs_to_json(outputs)}
    write_json(path, payload)
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


SUMMARY_KEYS = (
    "steps", "train_contexts", "train_pairs", "initial_eval_gold_nll", "final_eval_gold_nll",
    "initial_eval_rank_acc_pm", "final_eval_rank_acc_pm", "initial_eval_rank_acc_oracle",
    "final_eval_rank_acc_oracle", "held_out_pairs_pm", "held_out_pairs_oracle",
)  # fmt: skip
"""What a row's report keeps of its run's summary.json (calibration or DPO)."""


def evaluate_task(study: CalibrationStudyConfig, task: TaskSpec) -> dict:
    """Step 4 of one task: every finished generator (losses, controls, sweep rows, the DPO
    peer) and the best-of-K picks against the base and the controls; the preference models'
    ranking quality; each generator's own ranking accuracy on the evaluation candidates."""
    task_dir = study.study_dir / task.name
    decoding = study.answer_decoding()
    items = eval_items(study, task)
    ids_sha = sha256_json([r["id"] for r in items])
    judge = load_task_judge(study, task)
    base_config = from_dict(GeneratorConfig, study.generator)
    base_key = {
        "generator": to_dict(base_config),
        "decoding": dataclasses.asdict(decoding),
        "items": ids_sha,
    }
    base_out, _ = cached_outputs(
        task_dir / "eval" / "base.outputs.json", base_key, base_config, items, decoding, "base"
    )
    result: dict[str, Any] = {
        "n": len(items),
        "judge": getattr(judge, "name", "judge"),
        "losses": {},
        "train_contexts": train_context_count(study, task),
        "controls": {},
        "sweep": {},
        "peers": {},
    }
    control_outputs: dict[str, GeneratorOutputs] = {}
    generated: dict[str, GeneratorOutputs] = {}  # every generator's answers, by name
    rankers: dict[str, tuple[Any, float, str | None]] = {}  # for the generators' own ranking

    def evaluate(
        config: Any, name: str, out: GeneratorOutputs | None = None, a: float | None = None
    ) -> dict | None:
        """The report of a run's generator (or of ``out``'s answers) against the base and
        each control; None if the run has not finished. ``a``: the length exponent of the
        generator's ``P(y)`` in its own ranking (default: the run's ``loss.length_penalty``)."""
        summary: dict = {}
        if out is None:
            summary_file = config.run_dir / "summary.json"
            if not summary_file.is_file():
                logger.warning("%s/%s: no calibrated generator yet: left out", task.name, name)
                return None
            spec = dataclasses.replace(base_config, name=str(config.run_dir), gguf_file=None)
            key = {**base_key, "generator": to_dict(spec), "calibration": sha256_file(summary_file)}
            out, _ = cached_outputs(
                task_dir / "eval" / f"{name}.outputs.json", key, spec, items, decoding, name
            )
            summary = json.loads(summary_file.read_text(encoding="utf-8"))
            a = config.loss.length_penalty if a is None else a
            rankers[name] = (spec, a, str(summary_file))
        report = compare_outputs(base_out, out, items, judge, decoding, num_examples=3)
        report.pop("items")
        if summary:
            report["calibration"] = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
        base_ppl, cal_ppl = (
            report["base"]["gold_perplexity"],
            report["calibrated"]["gold_perplexity"],
        )
        report["perplexity_change"] = cal_ppl / base_ppl - 1 if base_ppl else math.nan
        # Paired against each control on the same contexts: what the ranking adds to the MLE.
        report["vs_controls"] = {
            control: compare_outputs(c_out, out, items, judge, decoding, num_examples=0)["paired"]
            for control, c_out in control_outputs.items()
            if control != name
        }
        generated[name] = out
        if name in study.controls:
            control_outputs[name] = out
        prefix, variant = split_row_name(name)
        if variant is not None and prefix in generated:
            # a sweep row against its loss's (or control's) calibration at the study's
            # setting: what the variant changes, paired on the same contexts
            setting = generated[prefix]
            paired = compare_outputs(setting, out, items, judge, decoding, num_examples=0)
            ppl_setting = paired["base"]["gold_perplexity"]
            report["vs_setting"] = {
                **paired["paired"],
                "gold_perplexity_change": (
                    paired["calibrated"]["gold_perplexity"] / ppl_setting - 1
                    if ppl_setting
                    else math.nan
                ),
            }
        return report

    for control in study.controls:
        report = evaluate(control_config(study, task, control), control)
        if report is not None:
            result["controls"][control] = report
    for loss in study.losses:
        config = calibration_config(study, task, loss)
        report = evaluate(config, loss)
        if report is None:
            continue
        _, rows = read_candidates(config.candidates_path)
        judge_scores = judge_candidate_scores(judge, rows, task_dir / "eval" / "judge_scores.json")
        report["ranking"] = ranking_quality(rows, judge_scores)
        result["losses"][loss] = report
    for row in study.rows:
        if not row.runs_on(task.name):
            continue
        if (report := evaluate(sweep_config(study, task, row), row.name)) is not None:
            if row.loss in study.controls:  # a control at the variant's settings
                result["controls"][row.name] = {**report, "variant": row.variant, "pm": row.pm}
                control_outputs[row.name] = generated[row.name]
            else:
                result["sweep"][row.name] = {**report, "pm": row.loss, "variant": row.variant}
    if (dpo := study.dpo_peer()) is not None:
        dpo_run = dpo_config(study, task, result["train_contexts"])
        a = calibration_config(study, task, dpo.pm).loss.length_penalty  # as its PM's calibration
        if (report := evaluate(dpo_run, DPO_RUN, a=a)) is not None:
            export = Path(str(dpo_run.pairs)).with_suffix(".export.json")
            pairs = json.loads(export.read_text(encoding="utf-8")) if export.is_file() else None
            result["peers"][DPO_RUN] = {**report, "pm": dpo.pm, "pairs": pairs}
    for group in ("controls", "losses", "sweep", "peers"):
        for name, report in result[group].items():
            write_json(task_dir / "eval" / f"{name}.json", json_safe(report), indent=2)
    evaluate_on_eval_candidates(study, task, items, judge, result, evaluate, base_config, rankers)
    reports = [*result["losses"].values(), *result["controls"].values()]
    result["base"] = reports[0]["base"] if reports else None
    result["gold_utility"] = reports[0]["gold_utility"] if reports else None
    result["table"] = table_rows(result, study.max_perplexity_rise)
    result["ranking_acceptance"] = ranking_acceptance(result["table"])
    return result


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
    save_study_record(study, study.study_dir, sort_keys=True)
    outcome = empty_outcome()
    results = {}
    for task in study.tasks:
        if not report_only:
            for key, value in run_calibrations(study, task, train_overrides).items():
                outcome[key] += value
        results[task.name] = evaluate_task(study, task)
        results[task.name]["acceptance"] = acceptance(results[task.name], study.max_perplexity_rise)
    plots = write_plots(study, results)
    report = write_report(study, results, plots, command)
    write_json(
        study.study_dir / "report.json",
        json_safe(
            {"command": command, "git_commit": git_commit(), "outcome": outcome, "tasks": results}
        ),
        indent=2,
    )
    logger.info("calibration study %s: %s; report %s", study.name, outcome, report)
    return CalibrationStudyResult(study.study_dir, report, plots, results, outcome)
