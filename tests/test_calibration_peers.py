"""The calibration study's sweep rows and peers (issue 13): best-of-K picks and the one table's
verdict by hand, the step configs (which candidates a sweep row shares, the DPO peer's budget,
the evaluation contexts' search), the config errors, and the shipped sweep file."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import yaml

from bayespref.config import ConfigError
from bayespref.dpo import total_optimiser_steps
from bayespref.studies.calibration_peer_configs import (
    dpo_config,
    eval_candidates_config,
    eval_contexts_path,
    sweep_config,
    sweep_generation_config,
)
from bayespref.studies.calibration_peers import best_of_k_outputs, first_beams, pick
from bayespref.studies.calibration_report import all_generators_table
from bayespref.studies.calibration_study_config import (
    calibration_config,
    generation_config,
    load_calibration_study,
    pm_config,
)
from bayespref.studies.calibration_table import ranking_acceptance, table_rows

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "configs" / "calibration-study.yaml"
SWEEP = REPO / "configs" / "calibration-sweep.yaml"


def cand(text: str, count: int = 1) -> dict:
    return {"text": text, "score": 0.0, "count": count}


# -- best-of-K -----------------------------------------------------------------------------------


def test_first_beams_count_duplicates_as_beams():
    row = {"candidates": [cand("a", 2), cand("b"), cand("c"), cand("d")]}
    assert first_beams(row, 1) == ["a"]
    assert first_beams(row, 2) == ["a"]  # "a" was found by the first two beams
    assert first_beams(row, 3) == ["a", "b"]
    assert first_beams(row, 16) == ["a", "b", "c", "d"]


def test_pick_takes_the_top_score_and_the_higher_beam_on_a_tie():
    assert pick(["a", "b", "c"], {"a": 0.1, "b": 0.7, "c": 0.3}) == "b"
    assert pick(["a", "b", "c"], {"a": 0.2, "b": 0.9, "c": 0.9}) == "b"


def test_best_of_k_picks_by_hand():
    # beam order x1 > x2 > x3; the PM prefers x3, the judge x2
    rows = [{"id": "1", "candidates": [cand("x1"), cand("x2"), cand("x3")]},
            {"id": "2", "candidates": [cand("y1"), cand("y2")]}]  # fmt: skip
    pm = {("1", "x1"): 0.0, ("1", "x2"): 0.5, ("1", "x3"): 0.9, ("2", "y1"): 0.4, ("2", "y2"): 0.1}
    judge = {("1", "x1"): 0.2, ("1", "x2"): 0.8, ("1", "x3"): 0.1, ("2", "y1"): 0.0,
             ("2", "y2"): 0.6}  # fmt: skip
    items = [{"id": "2"}, {"id": "1"}]  # the evaluation order, not the file's
    out = best_of_k_outputs(rows, {"soft": pm}, judge, items, [2, 3])
    assert list(out) == [
        "top beam", "best-of-2 (soft)", "best-of-2 (judge)", "best-of-3 (soft)",
        "best-of-3 (judge)",
    ]  # fmt: skip
    texts = {name: o.texts for name, (_, _, o) in out.items()}
    assert texts["top beam"] == ["y1", "x1"]
    assert texts["best-of-2 (soft)"] == ["y1", "x2"]  # x3 is not among the first 2 beams
    assert texts["best-of-2 (judge)"] == ["y2", "x2"]
    assert texts["best-of-3 (soft)"] == ["y1", "x3"]
    assert texts["best-of-3 (judge)"] == ["y2", "x2"]
    k, picker, outputs = out["best-of-3 (soft)"]
    assert (k, picker) == (3, "soft") and out["top beam"][:2] == (1, None)
    assert outputs.lengths == [] and all(math.isnan(v) for v in outputs.gold_nll)
    with pytest.raises(ValueError, match="no candidates"):
        best_of_k_outputs(rows, {}, judge, [{"id": "3"}], [2])


# -- the one table and its verdict ---------------------------------------------------------------


def interval(mean: float, low: float, high: float) -> dict:
    return {"mean": mean, "low": low, "high": high, "n": 200}


def report(vs_base, vs_control=None, change=math.nan, **extra) -> dict:
    r = {
        "calibrated": {"utility": interval(0.7, 0.6, 0.8), "gold_perplexity": 10.0},
        "paired": {"utility_difference": vs_base, "win_rate": {"rate": 0.6}},
        "vs_controls": {}
        if vs_control is None
        else {"mle-only": {"utility_difference": vs_control}},
        "perplexity_change": change,
    }
    return {**r, **extra}


def test_table_rows_and_the_verdict_by_hand():
    result = {
        "losses": {
            # beyond mle-only, but gold perplexity up 12% (> 10%): does not pass
            "jsd": report(
                interval(0.2, 0.1, 0.3),
                interval(0.05, 0.01, 0.09),
                0.12,
                calibration={"initial_eval_rank_acc_pm": 0.5, "final_eval_rank_acc_pm": 0.7},
            ),
            "soft": report(interval(0.1, 0.05, 0.15), interval(0.01, -0.02, 0.04), -0.3),
        },  # fmt: skip
        "sweep": {
            "soft+rank10": report(
                interval(0.2, 0.1, 0.3),
                interval(0.03, 0.005, 0.05),
                0.1,
                pm="soft",
                vs_setting={
                    "utility_difference": interval(0.02, -0.01, 0.05),
                    "win_rate": {"rate": 0.55, "low": 0.5, "high": 0.6},
                    "gold_perplexity_change": -0.2,
                },
            )
        },  # fmt: skip
        "controls": {"mle-only": report(interval(0.15, 0.1, 0.2), None, -0.4)},
        "peers": {
            "dpo": report(interval(0.1, 0.0, 0.2), interval(0.02, 0.001, 0.04), 0.0, pm="soft")
        },
        "best_of_k": {
            "best-of-4 (judge)": report(
                interval(0.3, 0.2, 0.4), interval(0.1, 0.05, 0.15), picker="judge"
            ),
            "top beam": report(interval(0.0, -0.1, 0.1), interval(-0.1, -0.2, 0.0), picker=None),
        },  # fmt: skip
        "generator_ranking": {
            "generators": {
                "jsd": {
                    "base": {"rank_acc_judge": 0.55, "rank_acc_jsd": 0.6},
                    "after": {"rank_acc_judge": 0.58, "rank_acc_jsd": 0.7},
                }
            }
        },  # fmt: skip
    }
    result["controls"]["mle-only"]["calibrated"]["gold_perplexity"] = 8.0
    rows = table_rows(result, 0.10)
    assert [(r["name"], r["kind"], r["pm"]) for r in rows] == [
        ("jsd", "loss", "jsd"), ("soft", "loss", "soft"), ("soft+rank10", "sweep", "soft"),
        ("mle-only", "control", None), ("dpo", "dpo", "soft"),
        ("best-of-4 (judge)", "ceiling", None), ("top beam", "top-beam", None),
    ]  # fmt: skip
    by_name = {r["name"]: r for r in rows}
    assert by_name["jsd"]["beats_control"] and not by_name["jsd"]["perplexity_ok"]
    assert not by_name["jsd"]["passes"]
    assert by_name["soft+rank10"]["passes"]  # low 0.005 > 0 and +10% is within 10%
    assert not by_name["soft"]["passes"] and not by_name["dpo"]["passes"]  # dpo: not PM-ranked
    assert by_name["jsd"]["held_out_ranking"] == {"pm": [0.5, 0.7]}
    assert by_name["jsd"]["eval_ranking"] == {"judge": [0.55, 0.58], "pm": [0.6, 0.7]}
    assert by_name["soft"]["eval_ranking"] == {}
    # gold perplexity 10 against the control's 8: +25%; the control against itself: nothing
    assert by_name["jsd"]["perplexity_vs_controls"] == {"mle-only": pytest.approx(0.25)}
    assert by_name["mle-only"]["perplexity_vs_controls"] == {}
    assert by_name["soft+rank10"]["vs_setting"]["gold_perplexity_change"] == -0.2
    assert by_name["soft"]["vs_setting"] is None

    verdict = ranking_acceptance(rows)
    assert verdict["accepted"] is True and verdict["passing"] == ["soft+rank10"]
    assert verdict["best"] == "jsd"  # the largest mean against mle-only, yet it fails on ppl
    assert verdict["best_vs_matched_control"] is None  # jsd is not a sweep row
    assert verdict["peers_beating_control"] == ["dpo", "best-of-4 (judge)"]
    assert verdict["ceiling_vs_control"] == {"best-of-4 (judge)": interval(0.1, 0.05, 0.15)}

    by_name["soft+rank10"]["vs_controls"]["mle-only+rank10"] = interval(0.04, 0.01, 0.07)
    markdown = "\n".join(
        all_generators_table({"table": rows, "n": 200, "ranking_acceptance": verdict}, 0.10)
    )
    assert "| +10.0%; +25.0% |" in markdown  # soft+rank10: vs the base; vs mle-only
    assert "#### Sweep rows against the study's setting" in markdown
    assert markdown.count("| soft+rank10 |") == 2
    assert "| -20.0% | 0.0400 [0.0100, 0.0700] |" in markdown  # vs it; vs mle-only+rank10

    # a sweep row that is best against mle-only, with its control at the same settings run
    only_sweep = {"sweep": result["sweep"], "controls": result["controls"]}
    sweep_rows = table_rows(only_sweep, 0.10)
    sweep_rows[0]["vs_controls"]["mle-only+rank10"] = interval(-0.01, -0.03, 0.01)
    matched = ranking_acceptance(sweep_rows)
    assert matched["best"] == "soft+rank10"
    assert matched["best_vs_matched_control"] == interval(-0.01, -0.03, 0.01)
    text = "\n".join(
        all_generators_table({"table": sweep_rows, "n": 200, "ranking_acceptance": matched}, 0.10)
    )
    assert "Against `mle-only+rank10`" in text and "adds nothing measurable" in text

    del result["sweep"]
    assert ranking_acceptance(table_rows(result, 0.10))["accepted"] is False
    del result["controls"]
    for r in result["losses"].values():
        r["vs_controls"] = {}
    assert ranking_acceptance(table_rows(result, 0.10))["accepted"] is None


# -- step configs --------------------------------------------------------------------------------


def quick_study(tmp_path, *overrides: str):
    return load_calibration_study(
        STUDY, quick=True, overrides=[f"output_dir={tmp_path}", *overrides]
    )


def test_a_control_row_is_the_control_at_the_variants_settings(tmp_path):
    """rows: {loss: mle-only, variant: v}: the budget-matched control of v's rows, still
    without a preference model or a ranking term, whatever the variant says."""
    study = quick_study(
        tmp_path,
        "variants=[{name: long, overrides: [optim.epochs=3, loss.rank_weight=5]}]",
        "rows=[{loss: mle-only, variant: long}, {loss: soft, variant: long}]",
    )
    task = study.tasks[0]
    control, ranked = (sweep_config(study, task, row) for row in study.rows)
    assert control.name == "mle-only+long" and control.run_dir.parent.name == "calibrated"
    assert control.scorer.run is None and control.loss.rank_weight == 0  # still the control
    assert control.optim.epochs == ranked.optim.epochs == 3
    assert ranked.scorer.run.endswith("pm/soft") and ranked.loss.rank_weight == 5


def test_a_control_row_with_a_pm_fine_tunes_on_that_pms_top_candidate(tmp_path):
    """Without references (loss.mle_target=top-candidate) the matched control is fine-tuning on
    the preference model's pick with the ranking off: {loss: mle-only, variant: v, pm: soft}
    reads soft's ranked candidates; the ranked row differs from it only in the ranking term."""
    study = quick_study(
        tmp_path,
        "variants=[{name: top, overrides: [loss.mle_target=top-candidate]}]",
        "rows=[{loss: mle-only, variant: top, pm: soft}, {loss: soft, variant: top}]",
    )
    task = study.tasks[0]
    control, ranked = (sweep_config(study, task, row) for row in study.rows)
    soft = calibration_config(study, task, "soft")
    assert control.name == "mle-only+top" and control.scorer.run == soft.scorer.run
    assert control.candidates_path == ranked.candidates_path == soft.candidates_path
    assert control.loss.mle_target == ranked.loss.mle_target == "top-candidate"
    assert control.loss.rank_weight == 0 and ranked.loss.rank_weight == soft.loss.rank_weight
    assert dataclasses.replace(control.loss, rank_weight=ranked.loss.rank_weight) == ranked.loss
    assert control.optim == ranked.optim and control.peft == ranked.peft


def test_sweep_rows_share_the_losss_candidates_unless_they_change_the_search(tmp_path):
    study = quick_study(
        tmp_path,
        "variants=[{name: r10, overrides: [loss.rank_weight=10]}, "
        "{name: k2, overrides: [decoding.num_beams=2, decoding.num_beam_groups=2]}, "
        "{name: k2r, overrides: [decoding.num_beams=2, decoding.num_beam_groups=2, "
        "loss.margin=0.01]}]",
        "rows=[{loss: jsd, variant: r10}, {loss: jsd, variant: k2}, {loss: soft, variant: k2r}]",
    )
    task = study.tasks[0]
    r10, k2, k2r = study.rows
    base = calibration_config(study, task, "jsd")
    config = sweep_config(study, task, r10)
    assert config.run_dir == base.run_dir.parent / "jsd+r10"
    assert config.candidates_path == base.candidates_path  # the same ranked candidates
    assert config.loss.rank_weight == 10 and config.optim == base.optim
    assert sweep_generation_config(study, task, r10) is None
    own = sweep_config(study, task, k2)
    search = sweep_generation_config(study, task, k2)
    assert search is not None and search.scorer.run is None and search.decoding.num_beams == 2
    assert own.candidates_path == search.candidates_path.parent / "jsd.jsonl"
    assert search.run_dir == search.candidates_path.parent  # the search's lock is its folder
    assert (
        search.candidates_path.parent.parent
        == generation_config(study, task).candidates_path.parent
    )
    # the same search, another loss setting: one search folder, two ranked files
    assert sweep_generation_config(study, task, k2r).candidates_path == search.candidates_path
    assert sweep_config(study, task, k2r).candidates_path.name == "soft.jsonl"


def test_the_dpo_peer_has_its_calibrations_budget(tmp_path):
    study = quick_study(tmp_path)
    task = study.tasks[0]
    calibration = calibration_config(study, task, "soft")
    dpo = dpo_config(study, task, 8)
    assert dpo.run_dir == calibration.run_dir.parent / "dpo"
    assert str(dpo.pairs).endswith("candidates/soft.best-vs-worst.pairs.jsonl")
    assert dpo.generator == calibration.generator and dpo.peft == calibration.peft
    for key in ("lr", "batch_size", "grad_accum", "warmup_ratio", "max_grad_norm", "weight_decay"):
        assert getattr(dpo.optim, key) == getattr(calibration.optim, key)
    assert dpo.optim.max_steps == calibration.optim.max_steps == 2  # quick: max_steps 2
    full = load_calibration_study(STUDY)
    full_dpo = dpo_config(full, full.tasks[0], 160)
    # 160 contexts, 2 x 4 per step, 1 epoch: the 20 steps calibration takes
    assert full_dpo.optim.max_steps == 20 == total_optimiser_steps(160, full_dpo.optim)
    assert full_dpo.optim.lr == 5.0e-4 and full_dpo.peft.method == "lora"
    beta = quick_study(tmp_path, "dpo={pm: soft, overrides: [dpo.beta=0.5]}")
    assert dpo_config(beta, beta.tasks[0], 8).dpo.beta == 0.5


def test_the_evaluation_contexts_are_searched_as_the_training_ones(tmp_path):
    study = load_calibration_study(STUDY, overrides=[f"output_dir={tmp_path}"])
    task = study.tasks[0]
    training = generation_config(study, task)
    search = eval_candidates_config(study, task, None)
    assert search.data.source == "jsonl" and search.data.path == str(
        eval_contexts_path(study, task)
    )
    assert search.data.n is None and search.data.n_eval == 0 and not search.eval_ranking
    assert search.scorer.run is None and search.generator == training.generator
    assert (search.decoding.num_beams, search.decoding.num_beam_groups) == (16, 16)
    for key in ("diversity_penalty", "max_new_tokens", "min_new_tokens", "length_penalty"):
        assert getattr(search.decoding, key) == getattr(training.decoding, key)
    ranked = eval_candidates_config(study, task, "jsd")
    assert ranked.scorer.run.endswith("pm/jsd") and ranked.candidates_path.name == "jsd.jsonl"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("variants=[{name: v, overrides: [scorer.run=x]}]", "fixed by the study"),
        ("variants=[{name: v, overrides: [data.n=3]}]", "fixed by the study"),
        ("variants=[{name: a+b, overrides: []}]", "plain"),
        ("variants=[{name: v, overrides: [loss.nonsense=1]}]\nrows=[]", "unknown config key"),
        ("variants=[{name: v, overrides: [loss.margin=-1]}]\nrows=[]", "must be >= 0"),
        ("rows=[{loss: jsd, variant: nope}]", "unknown variant"),
        ("variants=[{name: v}]\nrows=[{loss: hinge, variant: v}]", "not in losses"),
        ("variants=[{name: v}]\nrows=[{loss: jsd, variant: v, tasks: [x]}]", "unknown tasks"),
        ("variants=[{name: v}]\nrows=[{loss: jsd, variant: v, pm: soft}]", "pm is for a control"),
        ("variants=[{name: v}]\nrows=[{loss: mle-only, variant: v, pm: x}]", "must be one of"),
        (
            "variants=[{name: v, overrides: [loss.mle_target=top-candidate]}]\n"
            "rows=[{loss: mle-only, variant: v}]",
            "needs pm",
        ),
        ("dpo={pm: hinge}", "dpo.pm must be one of"),
        ("dpo={pm: soft, overrides: [pairs=x.jsonl]}", "set by the study"),
        ("dpo={pm: soft, strategy: random}", "dpo.strategy"),
        ("best_of_k={ks: [8]}", "exceed"),
        ("best_of_k={ks: [0]}", "integers >= 1"),
        ("best_of_k={ks: [2], tasks: [x]}", "unknown"),
    ],
)
def test_bad_sweep_and_peer_settings_are_one_config_error(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        quick_study(tmp_path, *override.split("\n"))


def test_the_sweep_file_is_the_study_plus_its_rows():
    study = yaml.safe_load(STUDY.read_text())
    sweep = yaml.safe_load(SWEEP.read_text())
    variants, rows = sweep.pop("variants"), sweep.pop("rows")
    assert sweep == study  # the same study folder: every finished step is reused
    config = load_calibration_study(SWEEP)
    # one soft row per variant, the control rows at epochs3, topcand and topcand3, and the
    # other four losses at epochs3
    assert len(config.rows) == len(rows) == len(variants) + 3 + 4 == 19
    assert [t.name for t in config.tasks] == ["synthetic"]
    assert all(row.runs_on("synthetic") for row in config.rows)
    others = [r for r in config.rows if r.loss in config.losses and r.loss != "soft"]
    assert {r.loss for r in others} == set(config.losses) - {"soft"}
    assert {r.variant for r in others} == {"epochs3"}
    controls = [r for r in config.rows if r.loss not in config.losses]
    assert [r.name for r in controls] == [
        "mle-only+epochs3",
        "mle-only+topcand",
        "mle-only+topcand3",
    ]
    assert [r.pm for r in controls] == [None, "soft", "soft"]
    task = config.tasks[0]
    base = calibration_config(config, task, "soft")
    changed = {}
    for row in (r for r in config.rows if r.loss == "soft"):
        swept = sweep_config(config, task, row)
        changed[row.variant] = {
            (section, key)
            for section in ("loss", "decoding", "optim")
            for key, value in vars(getattr(swept, section)).items()
            if getattr(getattr(base, section), key) != value
        } | ({("eval_every",)} if swept.eval_every != base.eval_every else set())
    # one factor at a time around the study's setting, and the BRIO corner
    assert changed["rank10"] == {("loss", "rank_weight")}
    assert changed["rank100"] == {("loss", "rank_weight"), ("loss", "mle_weight")}
    assert changed["margin0.01"] == {("loss", "margin")}
    assert changed["len2"] == {("loss", "length_penalty")}
    assert (
        changed["k8"]
        == changed["k16"]
        == {("decoding", "num_beams"), ("decoding", "num_beam_groups")}
    )
    assert changed["epochs3"] == {("optim", "epochs"), ("eval_every",)}
    assert changed["brio"] == set().union(
        *(changed[v] for v in ("rank100", "len2", "k16", "epochs3"))
    )
    # without references: only the MLE target changes (and the steps, for topcand3)
    assert changed["topcand"] == {("loss", "mle_target")}
    assert changed["topcand3"] == changed["topcand"] | changed["epochs3"]
    brio = sweep_config(config, task, next(r for r in config.rows if r.variant == "brio"))
    assert (brio.loss.rank_weight, brio.loss.mle_weight, brio.loss.length_penalty) == (10, 0.1, 2)
    assert brio.decoding.num_beams == 16 and brio.optim.epochs == 3


def test_candidate_source_rows_get_their_own_search():
    """A sweep row that changes only the candidate source (samples, both) searches into a
    folder of its own; a row that keeps the search (rank10) ranks the study's candidates."""
    study = load_calibration_study(SWEEP)
    task = study.tasks[0]
    rows = {r.variant: r for r in study.rows}
    seen = {}
    for name in ("k8", "samples4", "both8", "rank10", "k16", "brio"):
        config = sweep_config(study, task, rows[name])
        search = sweep_generation_config(study, task, rows[name])
        seen[name] = (
            str(config.candidates_path.relative_to(study.study_dir)),
            search and str(search.candidates_path.relative_to(study.study_dir)),
        )
    assert seen["rank10"] == ("synthetic/candidates/soft.jsonl", None)
    folder = "synthetic/candidates/search-"
    assert seen["k8"][1] == folder + "num_beam_groups8-num_beams8/generated.jsonl"
    assert seen["samples4"][1] == folder + "sourcesamples/generated.jsonl"
    assert seen["both8"][1] == folder + "sourceboth/generated.jsonl"
    assert seen["brio"][1] == seen["k16"][1]
    search = sweep_generation_config(study, task, rows["samples4"])
    assert search is not None and search.source == "samples" and search.scorer.run is None


@pytest.mark.parametrize(
    ("shipped_file", "row_name"),
    [
        ("calibrate-synthetic.yaml", "soft+epochs3"),
        ("calibrate-without-references.yaml", "soft+topcand3"),
    ],
)
def test_the_shipped_calibration_is_the_studys_recipe(shipped_file, row_name):
    """configs/calibrate-synthetic.yaml is the sweep's best measured PM-ranked recipe (its
    soft+epochs3 row), calibrate-without-references.yaml its best without reference replies
    (soft+topcand3), both ranking with configs/synthetic-indist.yaml, the study's soft PM
    settings: only the paths and the name differ."""
    from bayespref.calibration import CalibrationConfig
    from bayespref.config import load_config, load_yaml, to_dict

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in d.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = value
        return out

    def differing(a, b) -> set[str]:
        fa, fb = flat(to_dict(a)), flat(to_dict(b))
        return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}

    study = load_calibration_study(SWEEP)
    task = study.tasks[0]
    shipped = load_yaml(CalibrationConfig, REPO / "configs" / shipped_file)
    row = sweep_config(study, task, next(r for r in study.rows if r.name == row_name))
    paths = {"name", "output_dir", "progress", "candidates", "scorer.run"}
    assert differing(shipped, row) <= paths
    assert shipped.scorer.run == "runs/synthetic-indist"
    pm = load_config(REPO / "configs" / "synthetic-indist.yaml", [])
    study_pm = pm_config(study, task, "soft", study.pm_seed, "soft")
    # detach_target: the soft loss has no posterior target to detach
    assert differing(pm, study_pm) <= paths | {"loss.detach_target"}
