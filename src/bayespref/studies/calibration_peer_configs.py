"""The config of the calibration study's peers and sweep rows, each a step under
``<output_dir>/<study>/<task>/`` beside those of :mod:`.calibration_study_config`:

- :func:`sweep_config`: ``calibrated/<loss>+<variant>``, a sweep row: that loss's calibration
  with a named variant's overrides last; a variant that changes the candidate search gets its
  own candidates under ``candidates/<variant>/`` (:func:`sweep_generation_config`);
- :func:`dpo_config`: ``calibrated/dpo``, the DPO peer on the pairs exported from one preference
  model's ranking of the training candidates (:func:`dpo_pairs_path`), at the budget of that
  loss's calibration;
- :func:`eval_candidates_config`: ``eval/candidates/<generated|loss>.jsonl``, the base
  generator's candidates for the held-out evaluation contexts (:func:`eval_contexts_path`),
  searched as the training candidates are and re-scored by each preference model: best-of-K
  reranking and every generator's own ranking accuracy on the same sets.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..calibration import CalibrationConfig, ContextsConfig
from ..config import apply_overrides, from_dict, to_dict
from ..dpo import DPOConfig, total_optimiser_steps
from .calibration_study_config import (
    CONTROLS,
    DPO_RUN,
    CalibrationStudyConfig,
    SweepRowSpec,
    TaskSpec,
    calibration_config,
    control_config,
    generation_config,
    study_calibration_config,
    task_dir,
)


def search_folder(study: CalibrationStudyConfig, task: TaskSpec, config: CalibrationConfig) -> Path:
    """Where the candidates of a search other than the study's go: ``candidates/search-<the
    search keys that differ, with their values: CalibrationConfig.candidate_search>/``
    (variants with the same search share it)."""
    shared = generation_config(study, task).candidate_search()
    differ = {k: v for k, v in config.candidate_search().items() if shared.get(k) != v}
    tag = "-".join(f"{k}{v}" for k, v in sorted(differ.items()))
    return task_dir(study, task) / "candidates" / f"search-{tag}"


def sweep_config(
    study: CalibrationStudyConfig, task: TaskSpec, row: SweepRowSpec
) -> CalibrationConfig:
    """A sweep row (``calibrated/<loss>+<variant>``): ``loss``'s calibration with the variant's
    overrides last. Its candidates are the loss's own (``candidates/<loss>.jsonl``) unless the
    variant changes the search: then ``<search folder>/<loss>.jsonl`` (:func:`search_folder`),
    re-scored from :func:`sweep_generation_config`'s search."""
    overrides = study.variant(row.variant).overrides
    if row.loss in study.controls and row.pm is None:  # the control at the variant's settings
        data = apply_overrides(to_dict(control_config(study, task, row.loss)), overrides)
        data = apply_overrides(data, CONTROLS[row.loss])  # the control stays a control
        return from_dict(CalibrationConfig, {**data, "name": row.name}, f"rows[{row.name}]")
    if row.loss in study.controls:  # a control on row.pm's ranking (e.g. SFT on its top pick)
        overrides = [*overrides, *CONTROLS[row.loss]]  # the control stays a control
    ranker = row.pm or row.loss  # the loss whose preference model ranked the candidates
    base = calibration_config(study, task, ranker)
    config = study_calibration_config(
        study, task, row.name, base.scorer.run, base.candidates_path, overrides
    )
    if config.candidate_search() != base.candidate_search():
        cache = search_folder(study, task, config) / f"{ranker}.jsonl"
        config = dataclasses.replace(config, candidates=str(cache))
    return config


def sweep_generation_config(
    study: CalibrationStudyConfig, task: TaskSpec, row: SweepRowSpec
) -> CalibrationConfig | None:
    """The candidate search of a sweep row whose variant changes it (``<search
    folder>/generated.jsonl``, no scorer); None when the row shares the study's search."""
    overrides = study.variant(row.variant).overrides
    config = study_calibration_config(study, task, "search", None, Path("unused"), overrides)
    if config.candidate_search() == generation_config(study, task).candidate_search():
        return None
    folder = search_folder(study, task, config)
    return dataclasses.replace(  # the run folder (its lock) is the search folder
        config, name=folder.name, output_dir=str(folder.parent),
        candidates=str(folder / "generated.jsonl"),
    )  # fmt: skip


def dpo_pairs_path(study: CalibrationStudyConfig, task: TaskSpec) -> Path:
    """``candidates/<pm>.<strategy>.pairs.jsonl``: the DPO peer's pairs (export-pairs of
    ``candidates/<pm>.jsonl``)."""
    spec = study.dpo_peer()
    assert spec is not None
    return task_dir(study, task) / "candidates" / f"{spec.pm}.{spec.strategy}.pairs.jsonl"


def dpo_config(study: CalibrationStudyConfig, task: TaskSpec, train_contexts: int) -> DPOConfig:
    """The DPO peer (``calibrated/dpo``) at the budget of ``pm``'s calibration on
    ``train_contexts`` contexts: the same generator (prompt format, lengths), ``peft`` and
    ``optim`` sections, i.e. the same AdamW learning rate, schedule and clipping, the same
    contexts per optimiser step (``batch_size`` x ``grad_accum`` pairs, one pair per context)
    and the same number of optimiser steps (``optim.max_steps``: calibration's count over
    ``train_contexts``, :func:`~bayespref.dpo.total_optimiser_steps`, so contexts that
    export-pairs skips do not shorten the run); then ``dpo.overrides``."""
    spec = study.dpo_peer()
    assert spec is not None
    calibration = calibration_config(study, task, spec.pm)
    optim = to_dict(calibration.optim)
    optim["max_steps"] = total_optimiser_steps(train_contexts, calibration.optim)
    data = {
        "name": DPO_RUN,
        "output_dir": calibration.output_dir,
        "seed": study.seed,
        "pairs": str(dpo_pairs_path(study, task)),
        "generator": to_dict(calibration.generator),
        "optim": optim,
        "peft": to_dict(calibration.peft),
        "eval_every": calibration.eval_every,
        "save_every": calibration.save_every,
        "keep_last": calibration.keep_last,
        "progress": False,
    }
    return from_dict(DPOConfig, apply_overrides(data, spec.overrides))


def eval_contexts_path(study: CalibrationStudyConfig, task: TaskSpec) -> Path:
    """``eval/contexts.jsonl``: the held-out evaluation contexts, as the candidate search reads
    them (written by the study)."""
    return task_dir(study, task) / "eval" / "contexts.jsonl"


def eval_candidates_config(
    study: CalibrationStudyConfig, task: TaskSpec, loss: str | None
) -> CalibrationConfig:
    """The evaluation contexts' candidates: ``eval/candidates/generated.jsonl`` (``loss``
    None: the search, ranked by beam score) or ``eval/candidates/<loss>.jsonl`` (re-scored by
    ``pm/<loss>``). The training candidates' search (:meth:`CalibrationStudyConfig.eval_search`)
    on every context of :func:`eval_contexts_path`, none held out."""
    folder = task_dir(study, task) / "eval" / "candidates"
    cache = folder / f"{loss or 'generated'}.jsonl"
    pm_dir = None if loss is None else str(task_dir(study, task) / "pm" / loss)
    config = study_calibration_config(study, task, "candidates", pm_dir, cache)
    contexts = {"source": "jsonl", "path": str(eval_contexts_path(study, task)), "n": None,
                "n_eval": 0}  # fmt: skip
    return dataclasses.replace(
        config,
        output_dir=str(folder.parent),
        data=from_dict(ContextsConfig, contexts, f"tasks[{task.name}]"),
        decoding=study.eval_search(),
        eval_ranking=False,
    )
