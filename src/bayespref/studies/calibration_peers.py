"""The calibration study's peers and what every generator is measured on beside its answers.

- :func:`run_dpo_peer`: the DPO peer, cached and resumable like a calibration step: the pairs
  of one preference model's ranking of the training candidates (``export-pairs``, best against
  worst), then :func:`~bayespref.dpo.train_dpo` at that loss's calibration budget
  (:func:`.calibration_peer_configs.dpo_config`).
- :func:`build_eval_candidates`: the base generator's candidates for the held-out evaluation
  contexts (the training candidates' search, cached), re-scored by every preference model.
- :func:`best_of_k_outputs`: best-of-K reranking without training. Per evaluation context the
  generator's ``K`` highest beam-scored candidates (the first ``K`` beams of the candidate
  file, duplicates counted as beams); the pick is the candidate a preference model scores
  highest (ties: the higher beam), or the judge's best (the ceiling of reranking), or the first
  beam (no reranking). Each comes back as a generator's answers, to be judged and paired like
  one.
- :func:`generator_rankings`: each generator's own ranking accuracy on those candidate sets
  (:class:`~bayespref.calibration.CandidateRanking`: ``P(y) = sum log p / |y|^a`` ordering each
  pair as the judge does, and as each preference model does), cached per generator and ``a``.
- :func:`judge_candidate_scores`: the judge's utility of every candidate text, cached.
- :func:`evaluate_on_eval_candidates`: both of the above in a task's evaluation.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration import (
    CandidateRanking,
    ContextsConfig,
    build_candidates,
    load_contexts,
    read_candidates,
    rescore_candidates,
    split_contexts,
)
from ..config import from_dict
from ..dpo import train_dpo
from ..export import export_pairs
from ..generator_eval import GeneratorOutputs
from ..judges import Judge
from ..lm import GeneratorConfig, load_generator
from .calibration_peer_configs import dpo_config, eval_candidates_config, eval_contexts_path
from .calibration_study_config import (
    CalibrationStudyConfig,
    TaskSpec,
    calibration_config,
    split_row_name,
)
from .common import run_status, run_unless_done, sha256_file, sha256_json, write_json

logger = logging.getLogger(__name__)


def train_context_count(study: CalibrationStudyConfig, task: TaskSpec) -> int:
    """The number of training contexts of every calibration of ``task`` (held-out ones left
    out): the count the DPO peer's budget is matched to."""
    data = from_dict(ContextsConfig, task.contexts)
    train_rows, _ = split_contexts(load_contexts(data), data, study.seed)
    return len(train_rows)


# ---------------------------------------------------------------------------------------------
# The DPO peer


def run_dpo_peer(study: CalibrationStudyConfig, task: TaskSpec) -> str:
    """Export the pairs (what export-pairs wrote and skipped: ``<pairs stem>.export.json``) and
    train the DPO peer unless finished; ``cached``, ``trained`` or ``resumed``."""
    spec = study.dpo_peer()
    assert spec is not None
    config = dpo_config(study, task, train_context_count(study, task))
    source = calibration_config(study, task, spec.pm).candidates_path
    export = export_pairs(source, str(config.pairs), strategy=spec.strategy)
    write_json(Path(str(config.pairs)).with_suffix(".export.json"), export.to_dict(), indent=2)
    status = run_status(config, finished=("summary.json", "generator"), what="DPO run")
    started = (config.run_dir / "checkpoint").exists() or (
        config.run_dir / "metrics.jsonl"
    ).exists()
    if status == "partial" and not started:  # claimed, then stopped before its first step
        status = "new"
    if status != "done":
        logger.info("DPO peer %s: %s", config.run_dir, status)
    return run_unless_done(status, train_dpo, config)


# ---------------------------------------------------------------------------------------------
# The evaluation contexts' candidates


def write_eval_contexts(path: Path, items: list[dict]) -> None:
    """The held-out evaluation contexts as context JSONL (``{"id", "context", "gold"}``), left
    untouched when it already holds them."""
    text = "".join(
        json.dumps({k: it[k] for k in ("id", "context", "gold")}, ensure_ascii=False) + "\n"
        for it in items
    )
    if not (path.is_file() and path.read_text(encoding="utf-8") == text):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def build_eval_candidates(study: CalibrationStudyConfig, task: TaskSpec, items: list[dict]) -> None:
    """Search the evaluation contexts' candidates once (``eval/candidates/generated.jsonl``)
    and re-score them by every preference model (``eval/candidates/<loss>.jsonl``)."""
    write_eval_contexts(eval_contexts_path(study, task), items)
    generated = build_candidates(eval_candidates_config(study, task, None))
    for loss in study.losses:
        rescore_candidates(eval_candidates_config(study, task, loss), generated)


def eval_candidate_rows(
    study: CalibrationStudyConfig, task: TaskSpec
) -> tuple[list[dict], dict[str, dict[tuple[str, str], float]]] | None:
    """The evaluation contexts' candidate rows in beam order and, per loss, its preference
    model's score of each ``(context id, text)``; None when the search has not finished."""
    path = eval_candidates_config(study, task, None).candidates_path
    if not path.is_file():
        return None
    meta, rows = read_candidates(path)
    if not meta.get("complete"):
        return None
    scores = {}
    for loss in study.losses:
        scored = eval_candidates_config(study, task, loss).candidates_path
        if scored.is_file():
            _, pm_rows = read_candidates(scored)
            scores[loss] = {
                (r["id"], c["text"]): c["score"] for r in pm_rows for c in r["candidates"]
            }
    return rows, scores


def judge_candidate_scores(
    judge: Judge, rows: list[dict], cache: Path
) -> dict[tuple[str, str], float]:
    """The judge's utility of every distinct (context, candidate text), cached."""
    wanted = sorted({(r["id"], c["text"]) for r in rows for c in r["candidates"]})
    key = sha256_json([getattr(judge, "name", "judge"), wanted])
    if cache.is_file():
        data = json.loads(cache.read_text(encoding="utf-8"))
        if data.get("key") == key:
            return {(i, t): s for i, t, s in data["scores"]}
    context = {r["id"]: r["context"] for r in rows}
    utilities = judge.utilities([context[i] for i, _ in wanted], [t for _, t in wanted])
    scores = {pair: float(u) for pair, u in zip(wanted, utilities, strict=True)}
    payload = {"key": key, "scores": [[i, t, s] for (i, t), s in scores.items()]}
    write_json(cache, payload)
    return scores


# ---------------------------------------------------------------------------------------------
# Best-of-K


def first_beams(row: dict, k: int) -> list[str]:
    """The distinct texts among a candidate row's first ``k`` beams, in beam order (a text
    found by ``count`` beams counts ``count`` times toward ``k``)."""
    texts: list[str] = []
    beams = 0
    for c in row["candidates"]:
        if beams >= k:
            break
        texts.append(c["text"])
        beams += c["count"]
    return texts


def pick(texts: list[str], score: dict[str, float]) -> str:
    """The text with the highest ``score`` (the first of tied ones: the higher beam)."""
    return max(texts, key=lambda t: (score[t], -texts.index(t)))


def best_of_k_outputs(
    rows: list[dict],
    pm_scores: dict[str, dict[tuple[str, str], float]],
    judge_scores: dict[tuple[str, str], float],
    items: list[dict],
    ks: list[int],
) -> dict[str, tuple[int, str | None, GeneratorOutputs]]:
    """Best-of-K picks as answers to ``items``, by name: ``best-of-<k> (<loss>)`` per preference
    model and K, ``best-of-<k> (judge)`` (the judge's best: the ceiling) and ``top beam`` (the
    first candidate: the search without reranking); each with its K and picker (a loss,
    ``judge``, or None for the top beam). ``rows``: the evaluation candidates in beam order,
    matched to items by id. No lengths or gold log-likelihoods (nothing decodes)."""
    by_id = {row["id"]: row for row in rows}
    missing = [it["id"] for it in items if it["id"] not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} evaluation contexts have no candidates ({missing[:3]})")
    pickers: dict[str, tuple[int, str | None, dict]] = {"top beam": (1, None, judge_scores)}
    for k in ks:
        for loss, scores in pm_scores.items():
            pickers[f"best-of-{k} ({loss})"] = (k, loss, scores)
        pickers[f"best-of-{k} (judge)"] = (k, "judge", judge_scores)
    out = {}
    for name, (k, picker, scores) in pickers.items():
        texts = []
        for it in items:
            beams = first_beams(by_id[it["id"]], k)
            texts.append(pick(beams, {t: scores[(it["id"], t)] for t in beams}))
        nan = np.full(len(items), math.nan)
        no_tokens = np.zeros(len(items), dtype=np.int64)
        out[name] = (k, picker, GeneratorOutputs(name, texts, [], nan, no_tokens))
    return out


# ---------------------------------------------------------------------------------------------
# Each generator's own ranking


def generator_rankings(
    rows: list[dict],
    references: dict[str, np.ndarray],
    generators: dict[str, tuple[Any, float, str | None]],
    cache_dir: Path,
) -> dict[str, dict[str, float]]:
    """``{name: {"rank_acc_<reference>": accuracy}}`` of each generator on ``rows``' sets.

    ``references``: name -> (N,) scores of the rows' candidates in order (``judge``, each
    loss); ``generators``: name -> (a :func:`~bayespref.lm.load_generator` spec, the ``a`` of
    its ``P(y)``, a file whose hash names its weights or None). Cached in
    ``<cache_dir>/<name>.json``, keyed by all of these and the candidate texts.
    """
    sets = sha256_json([[r["id"], [c["text"] for c in r["candidates"]]] for r in rows])
    refs = sha256_json({name: values.tolist() for name, values in references.items()})
    out = {}
    for name, (spec, length_penalty, weights) in generators.items():
        key = sha256_json(
            {
                "generator": spec,
                "weights": sha256_file(Path(weights)) if weights else None,
                "length_penalty": length_penalty,
                "sets": sets,
                "references": refs,
            }
        )
        path = cache_dir / f"{name}.json"
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") == key:
                out[name] = data["accuracy"]
                continue
        ranking = CandidateRanking(rows, references, length_penalty)
        accuracy = ranking.accuracy(load_generator(spec))
        write_json(path, {"key": key, "accuracy": accuracy, "pairs": ranking.pairs()})
        out[name] = accuracy
    return out


# ---------------------------------------------------------------------------------------------
# Both, in a task's evaluation


def evaluate_on_eval_candidates(
    study: CalibrationStudyConfig,
    task: TaskSpec,
    items: list[dict],
    judge: Judge,
    result: dict,
    evaluate: Any,
    base_config: GeneratorConfig,
    rankers: dict[str, tuple[Any, float, str | None]],
) -> None:
    """Best-of-K rows (``result["best_of_k"]``) and each generator's own ranking accuracy on the
    evaluation contexts' candidates (``result["generator_ranking"]``), when they are searched.

    ``evaluate(None, name, outputs)``: the study's report of a generator's answers (against the
    base and the controls); ``rankers``: name -> (generator spec, ``a``, its summary file) of
    every finished generator, ranked beside the base at each ``a``."""
    spec = study.best_of_k_spec()
    found = eval_candidate_rows(study, task) if spec and spec.runs_on(task.name) else None
    if spec is None or found is None:
        return
    rows, pm_scores = found
    folder = study.study_dir / task.name / "eval" / "candidates"
    judge_scores = judge_candidate_scores(judge, rows, folder / "judge_scores.json")
    result["best_of_k"] = {}
    picks = best_of_k_outputs(rows, pm_scores, judge_scores, items, spec.ks)
    for name, (k, picker, out) in picks.items():
        pm = picker if picker in pm_scores else None
        result["best_of_k"][name] = {
            **evaluate(None, name, out),
            "k": k,
            "picker": picker,
            "pm": pm,
        }
    if not spec.generator_ranking:
        return
    if not spec.rank_sweep_rows:  # the sweep rows and the controls at a variant's settings
        rankers = {n: r for n, r in rankers.items() if split_row_name(n)[1] is None}
    references = {
        name: np.array([s[(r["id"], c["text"])] for r in rows for c in r["candidates"]])
        for name, s in {"judge": judge_scores, **pm_scores}.items()
    }  # name -> (N,)
    lengths = sorted({a for _, a, _ in rankers.values()} or {1.0})
    generators = {f"base@a={a:g}": (base_config, a, None) for a in lengths}
    accuracy = generator_rankings(rows, references, {**generators, **rankers}, folder / "ranking")
    result["generator_ranking"] = {
        "sets": len(rows),
        "candidates": sum(len(r["candidates"]) for r in rows),
        "references": sorted(references),
        "generators": {
            name: {"length_penalty": a, "base": accuracy[f"base@a={a:g}"], "after": accuracy[name]}
            for name, (_, a, _) in rankers.items()
        },
    }
