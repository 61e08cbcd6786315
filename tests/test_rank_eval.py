"""rank-eval (issue 13 item 2): a tiny preference-model run (and a reward-model run) ranks
hand-written candidate sets; the report is the ranking metrics of its scores against the
utilities of the rows' p*, written as JSON and printed by the command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bayespref.cli import main
from bayespref.data import DataError
from bayespref.data.synthetic import SYNTHETIC_LABEL_SPACE
from bayespref.rank_eval import rank_eval, read_candidate_sets
from bayespref.ranking_metrics import compute_ranking_metrics, ranking_counts
from bayespref.reward_model import load_ranker
from test_reward_ranker import reward_run  # noqa: F401  (a module-scoped fixture)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

CONTEXT = ["I failed my exam and I feel terrible."]
OTHER = ["My dog is sick."]
# (group, source, response, p*): utilities p*(supportive) - p*(harmful)
ROWS = [
    ("a", "beam", "That sounds really hard. What happened?", [0.1, 0.2, 0.7]),  # 0.6
    ("a", "beam", "Whatever, exams do not matter.", [0.8, 0.1, 0.1]),  # -0.7
    ("a", "sample", "Study harder next time.", [0.3, 0.5, 0.2]),  # -0.1
    ("b", "beam", "I'm so sorry. How is your dog doing?", [0.0, 0.25, 0.75]),  # 0.75
    ("b", "sample", "Dogs get sick.", [0.2, 0.6, 0.2]),  # 0.0
    ("c", "beam", "Ok.", [0.2, 0.6, 0.2]),  # 0.0, a group of one
]
UTILITIES = [0.6, -0.7, -0.1, 0.75, 0.0, 0.0]


def write_heldout(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "meta.json").write_text(json.dumps(SYNTHETIC_LABEL_SPACE.to_dict()))
    lines = []
    for k, (group, source, response, p_star) in enumerate(ROWS):
        row = {
            "id": f"{group}:{source}{k}",
            "group": group,
            "context": CONTEXT if group == "a" else OTHER,
            "response": response,
            "labels": ["supportive", "neutral"],
            "annotators": ["W01", "W02"],
            "true_distribution": p_star,
            "source": source,
        }
        lines.append(json.dumps(row) + "\n")
    path = folder / "heldout.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def test_utilities_come_from_p_star_and_the_label_space(tmp_path):
    contexts, responses, utilities, groups = read_candidate_sets(write_heldout(tmp_path))
    np.testing.assert_allclose(utilities, UTILITIES)
    assert groups == ["a", "a", "a", "b", "b", "c"]
    assert contexts[0] == CONTEXT and responses[3].startswith("I'm so sorry")
    _, _, beam_utilities, beam_groups = read_candidate_sets(write_heldout(tmp_path), "beam")
    np.testing.assert_allclose(beam_utilities, [0.6, -0.7, 0.75, 0.0])
    assert beam_groups == ["a", "a", "b", "c"]


@pytest.mark.parametrize("kind", ["pm", "reward"])
def test_the_report_is_the_metrics_of_the_runs_scores(tmp_path, pm_run, reward_run, kind):  # noqa: F811
    run = pm_run if kind == "pm" else reward_run
    data = write_heldout(tmp_path)
    report = rank_eval(run, data, ks=(2, 4), out=tmp_path / "out" / "report.json")
    contexts, responses, utilities, groups = read_candidate_sets(data)
    scores = load_ranker(run).score(contexts, responses)
    assert report["metrics"] == pytest.approx(
        compute_ranking_metrics(scores, utilities, groups, ks=(2, 4)), nan_ok=True
    )
    assert report["counts"] == ranking_counts(scores, utilities, groups, ks=(2, 4))
    assert report["counts"]["groups"] == 3 and report["counts"]["ranked_groups"] == 2
    assert report["counts"]["pairs"] == 3 + 1
    # the ceiling does not depend on the model: A's best 0.6, B's 0.75, C's 0.0
    assert report["metrics"]["best_of_4_oracle"] == pytest.approx((0.6 + 0.75 + 0.0) / 3)
    assert report["metrics"]["best_of_4_first"] == pytest.approx((0.6 + 0.75 + 0.0) / 3)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["metrics"] == pytest.approx(report["metrics"], nan_ok=True)
    assert saved["format"] == "bayespref-rank-eval/1" and saved["run"] == str(run)


def test_the_command_prints_the_metrics_and_writes_the_report(tmp_path, pm_run, capsys):
    data = write_heldout(tmp_path)
    out = tmp_path / "report.json"
    assert main(["rank-eval", "--run", pm_run, "--data", str(data), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert "6 candidates in 3 groups, 2 ranked" in printed
    assert "pairwise_accuracy ↑" in printed and "best_of_16_oracle (ref)" in printed
    assert f"{report['metrics']['spearman']:8.4f}" in printed
    assert "3 groups have fewer than 4" in printed

    assert main(["rank-eval", "--run", pm_run, "--data", str(data), "--source", "sample"]) == 0
    assert "2 candidates in 2 groups" in capsys.readouterr().out


def test_rows_without_group_or_p_star_are_one_line_errors(tmp_path, pm_run, capsys):
    data = write_heldout(tmp_path)
    text = data.read_text().replace('"group": "a", ', "", 1)
    data.write_text(text)
    with pytest.raises(DataError, match="has no group"):
        rank_eval(pm_run, data)
    assert main(["rank-eval", "--run", pm_run, "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayespref rank-eval: error:") and "no group" in err
    no_truth = tmp_path / "no-truth"
    path = write_heldout(no_truth)
    path.write_text(
        "".join(
            json.dumps({k: v for k, v in json.loads(line).items() if k != "true_distribution"})
            + "\n"
            for line in path.read_text().splitlines()
        )
    )
    with pytest.raises(DataError, match="no true_distribution"):
        rank_eval(pm_run, path)
    with pytest.raises(DataError, match="no rows with source 'other'"):
        rank_eval(pm_run, write_heldout(tmp_path / "s"), source="other")
