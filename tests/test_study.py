"""The loss study: intervals, temperature scaling, cells, caching/resume, report, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bayespref.config import load_config
from bayespref.studies import loss_study as study_lib
from bayespref.studies.common import StudyError
from bayespref.studies.loss_report import annotator_table, conclusion, versus_baseline
from bayespref.studies.loss_study import fit_temperature, run_study, soft_ce_of_logits
from bayespref.studies.loss_study_config import BatchSweepSpec, build_cells, load_study

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "configs" / "study.yaml"


# -- intervals and temperature scaling, by hand ------------------------------------------------


def test_temperature_scaling_fixes_an_overconfident_model():
    # Every item: logits (4, 0) -> q = (0.982, 0.018), but the annotators split 60/40.
    # softmax(z / T) = (0.6, 0.4) needs 4 / T = log(0.6 / 0.4), i.e. T = 4 / log 1.5 = 9.865,
    # where the soft CE reaches its floor H(0.6, 0.4).
    logits = np.tile([4.0, 0.0], (50, 1))
    targets = np.tile([0.6, 0.4], (50, 1))
    temperature = fit_temperature(logits, targets)
    assert temperature == pytest.approx(4 / math.log(1.5), rel=1e-3)
    raw = soft_ce_of_logits(logits, targets)
    scaled = soft_ce_of_logits(logits, targets, temperature)
    floor = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert raw == pytest.approx(-(0.6 * math.log(1 / (1 + math.exp(-4))) + 0.4 * -4.0181499))
    assert scaled == pytest.approx(floor, abs=1e-6)
    assert scaled < raw - 0.5


def test_temperature_scaling_never_hurts_on_the_fitting_data():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 3))
    targets = rng.dirichlet(np.ones(3), size=200)
    temperature = fit_temperature(logits, targets)
    assert soft_ce_of_logits(logits, targets, temperature) <= soft_ce_of_logits(logits, targets)


def test_conclusion_says_whether_the_gap_exceeds_the_noise():
    apart = conclusion("soft_ce", {"a": (1.0, 0.01, 3), "b": (1.2, 0.01, 3)})
    assert "`a` is best" in apart and "do not overlap" in apart
    close = conclusion("accuracy", {"a": (0.50, 0.05, 3), "b": (0.52, 0.05, 3)})
    assert "`b` is best" in close and "overlap: within the seed noise" in close


# -- the shipped study configs -------------------------------------------------------------------


def test_shipped_study_has_every_row_and_dataset():
    study = load_study(STUDY)
    cells = build_cells(study)
    rows = {c.row for c in cells if c.group == "main"}
    for loss in ("forward-kl", "reverse-kl", "jsd", "soft", "majority"):
        assert loss in rows
    assert "soft+dawid-skene" in rows
    assert {"annotator-heads", "annotator-embeddings"} <= rows
    assert {c.dataset.name for c in cells} >= {
        "synthetic",
        "convabuse",
        "md-agreement",
        "hs-brexit",
        "armis",
    }
    assert len(study.seeds) >= 3
    sweep = {(c.normaliser, c.batch_size) for c in cells if c.group == "sweep"}
    sizes = {b for _, b in sweep}
    assert min(sizes) == 4 and max(sizes) == 64 and {n for n, _ in sweep} == {"batch", "ema"}
    for cell in cells:  # every cell's config resolves (keys and values valid)
        config = cell.config()
        assert config.run_dir == study.study_dir / cell.dataset.name / cell.row / f"seed{cell.seed}"
    quick = load_study(STUDY, quick=True)
    assert [d.name for d in quick.datasets] == ["synthetic"]


# -- end to end: --quick, caching, resume, report ------------------------------------------------


@pytest.fixture
def quick_study(tmp_path, tiny_encoder_dir):
    study = load_study(STUDY, quick=True, overrides=[f"output_dir={tmp_path}"])
    train_overrides = [
        f"model.encoder={tiny_encoder_dir}",
        f"model.feature_cache={tmp_path / 'feature-cache'}",
        "data.train={n: 64, seed: 1}",
        "data.valid={n: 32, seed: 2}",
        "eval_every=2",
    ]
    return study, train_overrides


def test_quick_study_end_to_end_cached_and_resumed(quick_study, monkeypatch):
    study, train_overrides = quick_study
    calls: list[tuple[str, bool]] = []
    real_train = study_lib.train

    def counting_train(config, resume=False):
        calls.append((str(config.run_dir), resume))
        return real_train(config, resume=resume)

    monkeypatch.setattr(study_lib, "train", counting_train)
    cells = build_cells(study, train_overrides)
    rows = sorted({c.row for c in cells})
    main_rows = {c.row for c in cells if c.group == "main"}
    assert sum(c.group == "main" for c in cells) == len(main_rows) * len(study.seeds) >= 4
    assert all(c.config().model.freeze_encoder for c in cells)

    result = run_study(study, train_overrides=train_overrides, progress=False)
    assert sorted(path for path, _ in calls) == sorted(str(c.config().run_dir) for c in cells)
    assert not any(resume for _, resume in calls)
    report = result.report.read_text(encoding="utf-8")
    for row in rows:
        assert f"`{row}`" in report
    assert "temperature-scaled" in report and "git commit" in report and "kl_true" in report
    assert {"soft+dawid-skene", "forward-kl+detached", "annotator-heads"} <= set(rows)
    heads = [c for c in cells if c.row == "annotator-heads"]
    assert all(c.config().model.kind == "annotator-heads" for c in heads)
    cached = json.loads((heads[0].config().run_dir / study_lib.EVAL_FILE).read_text())
    for key in ("annotator_error", "annotator_error_majority", "wasserstein", "kl_true"):
        assert np.isfinite(cached["raw"][key]), key
    # the per-annotator table: every row, the majority baseline beside it
    assert "### Per annotator (raw)" in report and "annotator_error_majority ↓" in report
    assert "Lowest per-annotator error rate" in report
    assert {p.stem for p in result.plots} >= {
        "synthetic-validation",
        "synthetic-objectives",
        "synthetic-detached",
    }
    assert result.plots and all(p.is_file() and p.stat().st_size > 1000 for p in result.plots)
    for cell in cells:
        evaluation = cell.config().run_dir / study_lib.EVAL_FILE
        assert evaluation.is_file()
    eval_mtimes = {
        c.key: (c.config().run_dir / study_lib.EVAL_FILE).stat().st_mtime_ns for c in cells
    }

    # Re-running trains nothing and re-evaluates nothing.
    calls.clear()
    again = run_study(study, train_overrides=train_overrides, progress=False)
    assert calls == []
    assert again.outcome["cached"] == len(cells)
    for cell in cells:
        mtime = (cell.config().run_dir / study_lib.EVAL_FILE).stat().st_mtime_ns
        assert mtime == eval_mtimes[cell.key]

    # A cell interrupted before it finished (no summary.json) is resumed, and only that one.
    victim = cells[-1].config().run_dir
    (victim / "summary.json").unlink()
    third = run_study(study, train_overrides=train_overrides, progress=False)
    assert calls == [(str(victim), True)]
    assert third.outcome == {
        "cached": len(cells) - 1,
        "trained": 0,
        "resumed": 1,
        "evaluated": len(cells),
    }
    assert (victim / "summary.json").is_file()

    # A cell folder that holds another config is refused, never overwritten.
    with pytest.raises(StudyError, match="different config"):
        run_study(study, train_overrides=[*train_overrides, "optim.lr=0.5"], progress=False)


def test_interval_over_seeds_in_the_results(quick_study):
    """The report's mean ± half-width is the t-interval of the per-cell (cached) results."""
    study, train_overrides = quick_study
    study.losses, study.rows = ["soft"], []
    study.batch_sweep = BatchSweepSpec(
        loss="forward-kl", batch_sizes=[8, 16], normalisers=["batch", "ema"], seeds=[0]
    )
    result = run_study(study, train_overrides=train_overrides, progress=False)
    assert "synthetic-batch-sensitivity" in {p.stem for p in result.plots}
    assert "forward-kl+ema-bs8" in result.table["synthetic"]
    cells = [c for c in build_cells(study, train_overrides) if c.group == "main"]

    values = [
        json.loads((c.config().run_dir / study_lib.EVAL_FILE).read_text())["raw"]["soft_ce"]
        for c in cells
    ]
    mean, half, n = result.table["synthetic"]["soft"]["raw"]["soft_ce"]
    assert n == len(values) == len(study.seeds)
    assert mean == pytest.approx(np.mean(values))
    from scipy import stats

    expected = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    assert half == pytest.approx(expected)
    assert f"{mean:.4f} ± {half:.4f}" in result.report.read_text(encoding="utf-8")

    # the CLI's --report-only reuses the cells (no training) and rewrites the report
    from bayespref.cli import main

    result.report.unlink()
    rc = main(
        [
            "compare",
            "--config",
            str(STUDY),
            "--quick",
            "--report-only",
            "--set",
            f"output_dir={study.output_dir}",
            "--set",
            "rows=[]",
            "--set",
            "losses=[soft]",
            *train_overrides,
        ]
    )
    assert rc == 0 and result.report.is_file()


def test_cell_config_matches_load_config(quick_study):
    study, train_overrides = quick_study
    cell = build_cells(study, train_overrides)[0]
    expected = load_config(cell.dataset.config, cell.overrides)
    assert cell.config() == expected
    assert expected.seed == cell.seed and expected.loss.name == cell.loss


def test_per_annotator_table_compares_the_best_row_with_the_majority_baseline():
    def entry(error, half_width):
        return {
            "raw": {
                "annotator_error": (error, half_width, 3),
                "annotator_error_majority": (0.30, 0.0, 3),
            }
        }

    rows = {"soft": entry(0.32, 0.01), "annotator-heads": entry(0.25, 0.02)}
    lines = annotator_table(rows)
    assert "| row | annotator_error ↓ | annotator_error_majority ↓ |" in lines
    assert "| `annotator-heads` | 0.2500 ± 0.0200 | 0.3000 ± 0.0000 |" in lines
    assert any("`annotator-heads` 0.2500 ± 0.0200 against 0.3000" in line for line in lines)
    assert any("lower, beyond the seed noise" in line for line in lines)
    assert versus_baseline((0.29, 0.02, 3), 0.30) == "lower, within the seed noise"
    assert versus_baseline((0.31, 0.01, 3), 0.30) == "not lower"
    assert annotator_table({"soft": {"raw": {"soft_ce": (0.5, 0.1, 3)}}}) == []  # no ids
