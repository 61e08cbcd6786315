"""The pairwise study (`bayespref compare` on a `kind: pairwise` file): the shipped configs, the
noise rule by hand, the quick study end to end (cached, resumed, report-only) and one-line
errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from bayespref.cli import main
from bayespref.config import ConfigError
from bayespref.studies import pairwise_study as study_lib
from bayespref.studies.pairwise_report import (
    conclusions,
    head_to_head_line,
    intervals_apart,
    ranked,
)
from bayespref.studies.pairwise_study_config import (
    HeadToHeadSpec,
    build_pairwise_cells,
    load_pairwise_study,
    study_kind,
)

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "configs" / "pairwise-study.yaml"


# -- the shipped configs ---------------------------------------------------------------------


def test_shipped_pairwise_study_has_the_nine_rows_and_resolves(monkeypatch):
    monkeypatch.chdir(REPO)  # the base config path is relative to the repository
    assert study_kind(STUDY) == "pairwise"
    assert study_kind(REPO / "configs" / "study.yaml") == "loss"
    study = load_pairwise_study(STUDY)
    assert [r.name for r in study.rows] == [
        "soft",
        "majority",
        "margin",
        "forward-kl",
        "reverse-kl",
        "jsd",
        "forward-kl+detached",
        "reverse-kl+detached",
        "jsd+detached",
    ]
    assert list(study.seeds) == [0, 1, 2]
    cells = build_pairwise_cells(study)
    assert len(cells) == 27
    for cell in cells:
        config = cell.config()
        assert config.run_dir == Path("runs/pairwise-study") / cell.row.name / f"seed{cell.seed}"
        assert config.seed == cell.seed and config.loss.name == cell.row.loss
        assert config.loss.detach_target == cell.row.name.endswith("+detached")
        assert config.data.valid == {"n": 1000, "seed": 3, "min_annotators": 1, "max_annotators": 5}
        assert config.data.train == {"n": 1200, "seed": 1, "min_annotators": 1, "max_annotators": 5}
    quick = load_pairwise_study(STUDY, quick=True)
    assert quick.name == "pairwise-study-quick" and len(quick.seeds) == 2 and len(quick.rows) == 3


# -- the noise rule and the sentences, by hand -------------------------------------------------


def test_intervals_apart_and_the_head_to_head_sentence():
    # 0.30 ± 0.01 is [0.29, 0.31]; 0.27 ± 0.01 is [0.26, 0.28]: disjoint.
    assert intervals_apart((0.30, 0.01, 3), (0.27, 0.01, 3)) is True
    # [0.29, 0.31] and [0.28, 0.30] share [0.29, 0.30].
    assert intervals_apart((0.30, 0.01, 3), (0.29, 0.01, 3)) is False
    assert intervals_apart((0.30, math.nan, 1), (0.27, 0.01, 3)) is None
    table = {
        "soft": {"kl_true": (0.318, 0.006, 3), "ece": (0.071, 0.003, 3)},
        "majority": {"kl_true": (0.278, 0.003, 3), "ece": (0.090, 0.004, 3)},
        "margin": {"kl_true": (0.250, 0.006, 3), "ece": (0.118, 0.004, 3)},
    }
    spec = HeadToHeadSpec(rows=["soft", "majority"], metrics=["kl_true", "ece"])
    kl = head_to_head_line(spec, "kl_true", table)  # lower is better: majority
    assert "`majority` beats `soft`" in kl and "beyond the seed noise" in kl
    ece = head_to_head_line(spec, "ece", table)
    assert "`soft` beats `majority`" in ece
    assert ranked("kl_true", table) == ["margin", "majority", "soft"]
    assert ranked("ece", table) == ["soft", "majority", "margin"]


# -- the quick study end to end --------------------------------------------------------------


@pytest.fixture
def quick_args(tmp_path, tiny_encoder_dir, monkeypatch):
    monkeypatch.chdir(REPO)
    return [
        "compare",
        "--config",
        str(STUDY),
        "--quick",
        "--set",
        f"output_dir={tmp_path}",
        f"model.encoder={tiny_encoder_dir}",
        f"model.feature_cache={tmp_path / 'feature-cache'}",
        "model.max_length=48",
    ]


def test_quick_pairwise_study_end_to_end_cached_and_resumed(quick_args, tmp_path, monkeypatch):
    calls: list[tuple[str, bool]] = []
    real_train = study_lib.train_pairwise

    def counting_train(config, resume=False):
        calls.append((str(config.run_dir), resume))
        return real_train(config, resume=resume)

    monkeypatch.setattr(study_lib, "train_pairwise", counting_train)
    assert main(quick_args) == 0
    study = load_pairwise_study(STUDY, quick=True, overrides=[f"output_dir={tmp_path}"])
    study_dir = tmp_path / "pairwise-study-quick"
    cells = build_pairwise_cells(study, quick_args[6:])
    assert sorted(p for p, _ in calls) == sorted(str(c.config().run_dir) for c in cells)
    assert len(calls) == 6 and not any(resume for _, resume in calls)

    # The table's mean ± half-width is the t-interval of the cells' last-step test metrics.
    finals = [
        json.loads((c.config().run_dir / "summary.json").read_text())["final"]
        for c in cells
        if c.row.name == "soft"
    ]
    assert all(f["kl_true"] > 0 for f in finals)
    values = [f["ece"] for f in finals]
    half = stats.t.ppf(0.975, 1) * np.std(values, ddof=1) / math.sqrt(2)
    results = json.loads((study_dir / "results.json").read_text())
    mean_got, half_got, n = results["table"]["soft"]["ece"]
    assert n == 2 and mean_got == pytest.approx(np.mean(values)) and half_got == pytest.approx(half)
    report = (study_dir / "report.md").read_text(encoding="utf-8")
    assert f"{np.mean(values):.4f} ± {half:.4f}" in report
    for row in ("`soft` (soft BT)", "`majority` (TRL's BT)", "`forward-kl+detached`"):
        assert row in report
    assert "kl_true ↓" in report and "accuracy ↑" in report and "git commit" in report
    assert "Recovers P* best by `kl_true`" in report
    assert "`soft` vs `majority` on `kl_true`" in report
    assert "`soft` vs `majority` on `ece`" in report
    assert results["conclusions"] == conclusions(
        study,
        study_lib.aggregate(
            cells,
            {c.key: json.loads((c.config().run_dir / "summary.json").read_text()) for c in cells},
        ),
    )
    assert results["cells_finished"] == 6 and results["outcome"]["trained"] == 6

    # A second run reuses every cell: nothing trains.
    calls.clear()
    assert main(quick_args) == 0
    assert calls == []
    assert json.loads((study_dir / "results.json").read_text())["outcome"]["cached"] == 6

    # A cell interrupted before it finished (no summary.json) resumes, and only that one.
    victim = cells[-1].config().run_dir
    (victim / "summary.json").unlink()
    assert main(quick_args) == 0
    assert calls == [(str(victim), True)]

    # --report-only trains nothing and rewrites the report.
    calls.clear()
    (study_dir / "report.md").unlink()
    assert main([*quick_args[:4], "--report-only", *quick_args[4:]]) == 0
    assert calls == [] and (study_dir / "report.md").is_file()


def test_a_cell_folder_of_another_config_is_a_one_line_error(quick_args, capsys):
    one_cell = ["--set", "seeds=[0]", "--set", "rows=[{name: soft}]", "--set", "head_to_head=null"]
    args = [*quick_args[:4], *one_cell, *quick_args[4:], "optim.max_steps=1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "optim.lr=0.5"]) == 2  # same cell folder, another learning rate
    err = capsys.readouterr().err  # the cells' progress bar, then the error
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err and last.startswith("bayespref compare: error:")
    assert "holds a run of a different config (keys ['optim.lr'])" in last


# -- one-line errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: pairwise\nseedz: [0]\ntest: {n: 8}\nrows: [{name: soft}]\n", "unknown config key"),
        ("kind: pairwize\n", "kind must be pairwise"),
        ("kind: pairwise\ntest: {n: 8}\nrows: [{name: x, loss: softt}]\n", "rows[x].loss"),
        ("kind: pairwise\nrows: [{name: soft}]\n", "test is required"),
        (
            "kind: pairwise\ntest: {n: 8}\nrows: [{name: soft}]\n"
            "head_to_head: {rows: [soft, majority]}\n",
            "unknown row(s) ['majority']",
        ),
    ],
)
def test_a_bad_study_file_is_a_one_line_error(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("bayespref compare: error:")
    assert message in err


def test_a_bad_study_key_override_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown config key"):
        load_pairwise_study(STUDY, overrides=["seedz=[0]"])
