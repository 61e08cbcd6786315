"""The calibration study: ranking quality by hand, the acceptance rule, the shipped configs, and
the --quick study end to end with tiny models (cached rerun, resumed partial steps, report),
with issue 13's sweep row, DPO peer, best-of-K and the one table."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

import bayespref.calibration.search as calibration_search
from bayespref.annotate_synthetic import AnnotateSyntheticConfig
from bayespref.calibration import read_candidates
from bayespref.cli import studies as studies_cli
from bayespref.config import load_yaml
from bayespref.studies import calibration_peers as peers
from bayespref.studies import calibration_study as cs
from bayespref.studies.calibration_peer_configs import (
    dpo_config,
    eval_candidates_config,
    sweep_config,
    sweep_generation_config,
)
from bayespref.studies.calibration_report import acceptance
from bayespref.studies.calibration_study import ranking_quality, run_calibration_study
from bayespref.studies.calibration_study_config import (
    calibration_config,
    control_config,
    load_calibration_study,
)
from bayespref.studies.common import StudyError
from bayespref.testing import save_tiny_llama

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "configs" / "calibration-study.yaml"
LOSSES = ["forward-kl", "reverse-kl", "jsd", "soft", "majority"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def cand(text: str, score: float) -> dict:
    return {"text": text, "score": score, "count": 1}


def test_ranking_quality_by_hand():
    rows = [
        # PM order a > b > c; judge c > b > a: Spearman -1, top-1 wrong, 0 of 3 pairs agree
        {"id": "1", "candidates": [cand("a", 0.9), cand("b", 0.5), cand("c", 0.1)]},
        # top two tie within 1e-3 but not 1e-6; judge agrees on the order: Spearman 1
        {"id": "2", "candidates": [cand("x", 0.5004), cand("y", 0.5), cand("z", 0.2)]},
        # one distinct candidate: not a set to rank
        {"id": "3", "candidates": [cand("only", 0.3)]},
    ]
    judge = {
        ("1", "a"): 0.0, ("1", "b"): 0.5, ("1", "c"): 1.0,
        ("2", "x"): 0.9, ("2", "y"): 0.6, ("2", "z"): 0.1,
    }  # fmt: skip
    q = ranking_quality(rows, judge)
    assert (q["sets"], q["sets_total"]) == (2, 3)
    assert q["top2_tie_1e-6"] == 0.0 and q["top2_tie_1e-3"] == 0.5
    assert q["mean_spread"] == pytest.approx(((0.9 - 0.1) + (0.5004 - 0.2)) / 2)
    assert q["spearman"] == pytest.approx(0.0)  # (-1 + 1) / 2
    assert q["top1_agreement"] == 0.5
    assert q["pairwise_agreement"] == pytest.approx(3 / 6) and q["pairs"] == 6


def test_acceptance_needs_the_interval_above_zero_and_a_small_perplexity_rise():
    def result(mean, low, change):
        return {
            "paired": {"utility_difference": {"mean": mean, "low": low, "high": mean + 1}},
            "perplexity_change": change,
        }

    task = {"losses": {"a": result(0.2, 0.05, 0.12), "b": result(0.1, 0.01, 0.05)}}
    acc = acceptance(task, 0.10)
    assert acc["best"] == "a" and not acc["accepted"]  # perplexity rose 12%
    assert acc["passing"] == ["b"] and acc["margin_over_runner_up"] == pytest.approx(0.1)
    task["losses"]["a"]["perplexity_change"] = 0.02
    assert acceptance(task, 0.10)["accepted"]
    task["losses"]["a"]["paired"]["utility_difference"]["low"] = -0.01
    assert not acceptance(task, 0.10)["accepted"]


def test_shipped_study_configs_load():
    study = load_calibration_study(STUDY)
    assert study.losses == LOSSES
    assert [t.name for t in study.tasks] == ["synthetic"]
    synthetic = study.tasks[0]
    assert synthetic.judge == "oracle" and synthetic.eval_contexts["n"] >= 200
    # in distribution: the PMs train on the annotated replies the study writes first
    annotate = load_yaml(AnnotateSyntheticConfig, REPO / synthetic.annotate)
    assert f"data.train={annotate.out_dir / 'train.jsonl'}" in synthetic.pm_overrides
    convabuse = load_calibration_study(REPO / "configs" / "calibration-convabuse.yaml")
    assert [t.name for t in convabuse.tasks] == ["convabuse"] and convabuse.losses == LOSSES
    assert convabuse.tasks[0].judge == {"loss": "soft", "seed": 1}
    assert convabuse.calibration == study.calibration and convabuse.decoding == study.decoding
    assert study.dpo_peer().pm == "soft" and study.best_of_k_spec().ks == [4, 8, 16]
    quick = load_calibration_study(STUDY, quick=True)
    assert quick.losses == LOSSES and quick.name == "calibration-study-quick"
    assert [r.name for r in quick.rows] == ["soft+brio"] and quick.dpo_peer() is not None


def test_the_annotate_step_runs_before_the_preference_models(tmp_path, monkeypatch):
    """A task with ``annotate`` writes its annotated replies (cached by annotate-synthetic
    itself) before any preference model trains on them."""
    study = load_calibration_study(STUDY, quick=True, overrides=[f"output_dir={tmp_path}"])
    config = tmp_path / "annotate.yaml"
    config.write_text(f"out: {tmp_path / 'annotated'}\n", encoding="utf-8")
    task = dataclasses.replace(study.tasks[0], annotate=str(config))
    calls = []

    class Stop(Exception):
        pass

    def fake_train_pm(pm):
        calls.append(("pm", pm.run_dir.name))
        raise Stop

    monkeypatch.setattr(
        cs, "annotate_synthetic", lambda a, commit=None: calls.append(("annotate", a.out_dir))
    )
    monkeypatch.setattr(cs, "train_pm", fake_train_pm)
    with pytest.raises(Stop):
        cs.run_calibrations(study, task)
    assert calls == [("annotate", tmp_path / "annotated"), ("pm", "forward-kl")]


@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory) -> str:
    return str(save_tiny_llama(tmp_path_factory.mktemp("gen") / "llama", seed=0))


def test_quick_study_end_to_end_cached_and_resumed(
    tmp_path, tiny_generator, tiny_encoder_dir, monkeypatch
):
    study = load_calibration_study(
        STUDY, quick=True, overrides=[f"output_dir={tmp_path}", f"generator.name={tiny_generator}"]
    )
    pm_overrides = [f"model.encoder={tiny_encoder_dir}", f"model.feature_cache={tmp_path / 'f'}"]
    result = run_calibration_study(study, train_overrides=pm_overrides, command="test")
    # 2 tasks x (5 losses: PMs and calibrations; + the mle-only control + the DPO peer); + the
    # second task's judge; + the sweep row (synthetic only)
    assert result.outcome == {"cached": 0, "trained": 26, "resumed": 0}

    root = study.study_dir
    report = result.report.read_text()
    for task in ("synthetic", "synthetic-pm-judge"):
        assert f"## {task}" in report
        assert set(result.results[task]["losses"]) == set(LOSSES)
        for loss in LOSSES:
            assert f"| {loss} |" in report
        assert "| mle-only (control) |" in report
        assert set(result.results[task]["controls"]) == {"mle-only"}
    assert "command: `test`" in report and "git commit" in report
    assert (root / "report.json").is_file()
    assert {p.name for p in result.plots} == {"utility_difference.png", "ranking_agreement.png"}

    # one shared generation; every PM's file holds the same texts, re-ranked
    task = study.tasks[0]
    _, generated = read_candidates(root / "synthetic" / "candidates" / "generated.jsonl")
    for loss in LOSSES:
        meta, rows = read_candidates(calibration_config(study, task, loss).candidates_path)
        assert meta["settings"]["scorer"]["run"].endswith(f"pm/{loss}")
        for row, gen in zip(rows, generated, strict=True):
            assert sorted(c["text"] for c in row["candidates"]) == sorted(
                c["text"] for c in gen["candidates"]
            )
            scores = [c["score"] for c in row["candidates"]]
            assert scores == sorted(scores, reverse=True)
    synthetic = result.results["synthetic"]
    assert synthetic["n"] == 12 and synthetic["judge"] == "oracle"
    # the control: the same calibration without a PM (ranking and gold terms off), trained on
    # the shared generation's contexts; each loss is also paired against it
    control = control_config(study, task, "mle-only")
    assert control.loss.rank_weight == 0 and control.loss.gold_weight == 0
    assert (
        control.scorer.run is None and control.optim == calibration_config(study, task, "jsd").optim
    )
    assert control.candidates_path == root / "synthetic" / "candidates" / "generated.jsonl"
    control_report = synthetic["controls"]["mle-only"]
    assert control_report["base"] == synthetic["base"]
    assert control_report["calibration"]["train_contexts"] == 8
    for loss in LOSSES:
        vs = synthetic["losses"][loss]["vs_controls"]["mle-only"]
        assert vs["utility_difference"]["low"] <= vs["utility_difference"]["high"] or math.isnan(
            vs["utility_difference"]["low"]
        )
    assert "Each loss's generator against the `mle-only` control" in report
    for loss in LOSSES:
        r = synthetic["losses"][loss]
        d = r["paired"]["utility_difference"]
        assert d["low"] <= d["mean"] <= d["high"] or math.isnan(d["low"])
        assert r["ranking"]["sets_total"] == 8
        assert r["base"] == synthetic["base"]  # the base answered once, shared
    assert result.results["synthetic-pm-judge"]["judge"].startswith("pm:")
    check_sweep_and_peers(study, result, report)

    # a rerun trains, generates and decodes nothing
    def forbidden(*args, **kwargs):
        raise AssertionError("a finished step ran again")

    with monkeypatch.context() as m:
        m.setattr(cs, "train", forbidden)
        m.setattr(cs, "calibrate", forbidden)
        m.setattr(calibration_search, "diverse_beam_search", forbidden)
        m.setattr(cs, "run_generator", forbidden)
        m.setattr(peers, "train_dpo", forbidden)
        m.setattr(peers, "load_generator", forbidden)  # the generators' own ranking: cached
        again = run_calibration_study(study, train_overrides=pm_overrides)
    assert again.outcome == {"cached": 26, "trained": 0, "resumed": 0}
    cached = again.results["synthetic"]["losses"]["jsd"]["paired"]
    assert cached["utility_difference"] == pytest.approx(
        synthetic["losses"]["jsd"]["paired"]["utility_difference"], nan_ok=True
    )

    assert json.dumps(again.results["synthetic"]["table"]) == json.dumps(synthetic["table"])
    # best_of_k.rank_sweep_rows false: the sweep row is left out of the generators' own ranking
    unranked = dataclasses.replace(study, best_of_k={**study.best_of_k, "rank_sweep_rows": False})
    report_only = run_calibration_study(unranked, report_only=True, train_overrides=pm_overrides)
    ranked = report_only.results["synthetic"]["generator_ranking"]["generators"]
    assert set(ranked) == {*LOSSES, "mle-only", "dpo"}

    # an interrupted calibration or DPO run (checkpoint, no generator yet) is resumed, not redone
    runs = [calibration_config(study, task, "jsd").run_dir, dpo_config(study, task, 8).run_dir]
    for run in runs:
        (run / "summary.json").unlink()
        shutil.rmtree(run / "generator")
    third = run_calibration_study(study, train_overrides=pm_overrides)
    assert third.outcome == {"cached": 24, "trained": 0, "resumed": 2}
    assert all((run / "generator").is_dir() for run in runs)
    assert set(third.results["synthetic"]["losses"]) == set(LOSSES)

    # a different calibration config in the same study folder is refused
    other = load_calibration_study(
        STUDY,
        quick=True,
        overrides=[
            f"output_dir={tmp_path}",
            f"generator.name={tiny_generator}",
            "calibration=[optim.lr=0.5, optim.max_steps=2, eval_every=2]",
        ],
    )
    with pytest.raises(StudyError, match="different config"):
        run_calibration_study(other, train_overrides=pm_overrides)


def check_sweep_and_peers(study, result, report: str) -> None:
    """Issue 13's rows in the quick study: the sweep row with its own search, the DPO peer at
    its calibration's budget, best-of-K, each generator's own ranking, the one table."""
    task = study.tasks[0]
    synthetic = result.results["synthetic"]
    row = study.rows[0]
    assert set(synthetic["sweep"]) == {"soft+brio"}
    # the row against soft at the study's setting, paired on the same contexts
    vs_setting = synthetic["sweep"]["soft+brio"]["vs_setting"]
    assert vs_setting["utility_difference"]["n"] == synthetic["n"]
    assert math.isfinite(vs_setting["gold_perplexity_change"])
    assert result.results["synthetic-pm-judge"]["sweep"] == {}  # the row runs on synthetic only
    swept = sweep_config(study, task, row)
    assert (swept.loss.rank_weight, swept.loss.mle_weight, swept.loss.length_penalty) == (
        10, 0.1, 2.0)  # fmt: skip
    search = sweep_generation_config(study, task, row)  # the variant's own, 2-beam search
    _, own = read_candidates(search.candidates_path)
    assert all(r["num_generated"] == 2 for r in own)
    _, ranked = read_candidates(swept.candidates_path)
    assert [r["id"] for r in ranked] == [r["id"] for r in own]
    assert json.loads((swept.run_dir / "summary.json").read_text())["steps"] == 2

    # the DPO peer: the soft PM's pairs, the calibration's 2 steps of 2 x 2 pairs
    dpo = dpo_config(study, task, 8)
    summary = json.loads((dpo.run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 == calibration_config(study, task, "soft").optim.max_steps
    peer = synthetic["peers"]["dpo"]
    assert peer["pm"] == "soft" and peer["pairs"]["contexts"] == 8
    assert peer["pairs"]["pairs"] == summary["train_pairs"] > 0
    assert len(Path(dpo.pairs).read_text().splitlines()) == summary["train_pairs"]

    # best-of-K: each PM and the judge among the first 2 and 4 beams, and the top beam
    _, eval_rows = read_candidates(eval_candidates_config(study, task, None).candidates_path)
    assert [r["id"] for r in eval_rows] == [r["id"] for r in cs.eval_items(study, task)]
    best = synthetic["best_of_k"]
    assert set(best) == {"top beam"} | {
        f"best-of-{k} ({p})" for k in (2, 4) for p in [*LOSSES, "judge"]
    }
    for k in (2, 4):  # the judge's own pick is the ceiling of every PM's
        ceiling = best[f"best-of-{k} (judge)"]["calibrated"]["utility"]["mean"]
        for p in LOSSES:
            assert best[f"best-of-{k} ({p})"]["calibrated"]["utility"]["mean"] <= ceiling + 1e-12
    assert (
        best["best-of-2 (judge)"]["calibrated"]["utility"]["mean"]
        <= best["best-of-4 (judge)"]["calibrated"]["utility"]["mean"] + 1e-12
    )
    # each generator's own ranking on those sets, the base's at a = 1 and (brio) a = 2
    ranking = synthetic["generator_ranking"]
    assert set(ranking["generators"]) == {*LOSSES, "mle-only", "soft+brio", "dpo"}
    assert ranking["generators"]["soft+brio"]["length_penalty"] == 2.0
    for name, r in ranking["generators"].items():
        assert 0 <= r["after"]["rank_acc_judge"] <= 1 and "rank_acc_soft" in r["base"], name
    pm_judged = result.results["synthetic-pm-judge"]  # best-of-K judged by a PM as well
    assert (
        set(pm_judged["best_of_k"]) == set(best)
        and "dpo" in pm_judged["generator_ranking"]["generators"]
    )

    # the one table: every row, computed, and the verdict
    names = [r["name"] for r in synthetic["table"]]
    assert names[:8] == [*LOSSES, "soft+brio", "mle-only", "dpo"]
    assert set(names[8:]) == set(best)
    verdict = synthetic["ranking_acceptance"]
    assert verdict["accepted"] == any(r["passes"] for r in synthetic["table"])
    assert "### Every generator in one table" in report and "**Target**" in report
    for name in names:
        assert f"| {name} |" in report


def test_cli_report_only(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    studies_cli.make_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["calibration-study", "--config", str(STUDY), "--quick", "--report-only",
         "--set", f"output_dir={tmp_path}", "--set", "tasks=[]"]
    )  # fmt: skip
    with pytest.raises(Exception, match="at least one task"):
        args.func(args)
    assert json.dumps(vars(args), default=str)
