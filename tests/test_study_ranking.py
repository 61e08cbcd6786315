"""The loss study on candidate sets (issue 13 item 1): each preference model's ranking of every
context's candidates against the oracle, per row, in the results and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bayespref.data import load_dataset
from bayespref.data.schema import AnnotatedDataset, AnnotatedExample, LabelSpace
from bayespref.studies.loss_report import ranking_table
from bayespref.studies.loss_study import candidate_ranking, run_study
from bayespref.studies.loss_study_config import build_cells, load_study

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = LabelSpace(names=("bad", "ok", "good"), utilities=(-1.0, 0.0, 1.0))


def _item(i: int, group: str | None, truth: list[float]) -> AnnotatedExample:
    return AnnotatedExample(
        id=f"c{i}",
        context=["ctx"],
        response=f"reply {i}",
        counts=np.array([0, 1, 0]),
        true_distribution=np.array(truth),
        meta={} if group is None else {"group": group},
    )


def test_candidate_ranking_by_hand():
    # group a: oracle utilities p* u = (1, 0); model scores q u = (0.5, -0.5): ordered right.
    # group b: oracle (0.2, 0.1); model (0, 1): ordered wrong. Pooled pairwise accuracy 1/2;
    # best-of-4 (every candidate): a picks utility 1, b picks 0.1 -> mean 0.55; oracle 0.6.
    truth = [[0, 0, 1], [0, 1, 0], [0.3, 0.2, 0.5], [0.3, 0.3, 0.4]]
    data = AnnotatedDataset([_item(i, "ab"[i // 2], t) for i, t in enumerate(truth)], SPACE)
    q = np.array([[0.0, 0.5, 0.5], [0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.0, 1.0]])
    result = candidate_ranking(data, q)
    assert result["ranking_pairwise_accuracy"] == pytest.approx(0.5)
    assert result["ranking_spearman"] == pytest.approx(0.0)  # +1 and -1
    assert result["ranking_top1"] == pytest.approx(0.5)
    assert result["ranking_best_of_4"] == pytest.approx(0.55)
    assert result["ranking_best_of_4_oracle"] == pytest.approx(0.6)


def test_no_ranking_without_groups_or_truth():
    truth = [[0, 0, 1], [0, 1, 0]]
    ungrouped = AnnotatedDataset([_item(i, None, t) for i, t in enumerate(truth)], SPACE)
    assert candidate_ranking(ungrouped, np.full((2, 3), 1 / 3)) == {}
    grouped = AnnotatedDataset([_item(i, "a", t) for i, t in enumerate(truth)], SPACE)
    grouped.examples[1].true_distribution = None
    assert candidate_ranking(grouped, np.full((2, 3), 1 / 3)) == {}


def _write_candidates(path, n: int, seed: int, per_group: int = 4) -> None:
    """Synthetic items as a candidate file: consecutive items form one context's candidates."""
    data = load_dataset("synthetic", n=n, seed=seed)
    with path.open("w", encoding="utf-8") as out:
        for i, ex in enumerate(data.examples):
            row = {
                "id": ex.id,
                "context": ex.context,
                "response": ex.response,
                "labels": [data.label_space.names[label] for _, label in ex.annotations],
                "annotators": [who for who, _ in ex.annotations],
                "true_distribution": ex.true_distribution.tolist(),
                "group": f"{seed}-{i // per_group}",
            }
            out.write(json.dumps(row) + "\n")
    space = data.label_space
    meta = {"names": list(space.names), "utilities": list(space.utilities)}
    (path.parent / "meta.json").write_text(json.dumps(meta), encoding="utf-8")


def test_a_study_on_candidate_sets_reports_each_rows_ranking(tmp_path, tiny_encoder_dir):
    data = tmp_path / "candidates"
    data.mkdir()
    for split, n, seed in (("train", 64, 1), ("valid", 24, 2), ("heldout", 32, 3)):
        _write_candidates(data / f"{split}.jsonl", n, seed)
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        f"""
name: ranking
output_dir: {tmp_path / "runs"}
seeds: [0, 1]
losses: [soft, forward-kl]
datasets:
  - name: candidates
    config: configs/synthetic.yaml
    overrides: [data.format=native, data.train={data / "train.jsonl"}, data.valid={data / "valid.jsonl"}]
    test: {data / "heldout.jsonl"}
overrides:
  - model.encoder={tiny_encoder_dir}
  - model.freeze_encoder=true
  - model.max_length=48
  - optim.epochs=1
  - optim.batch_size=16
  - select_metric=soft_ce
  - progress=false
""",
        encoding="utf-8",
    )
    result = run_study(load_study(study_file), progress=False)
    soft = result.table["candidates"]["soft"]["raw"]
    assert 0.0 <= soft["ranking_pairwise_accuracy"][0] <= 1.0 and soft["ranking_top1"][2] == 2
    # the reference picks do not depend on the model
    fkl = result.table["candidates"]["forward-kl"]["raw"]
    assert soft["ranking_best_of_4_oracle"][0] == fkl["ranking_best_of_4_oracle"][0]
    assert soft["ranking_best_of_4_oracle"][0] >= soft["ranking_best_of_4"][0]
    report = result.report.read_text(encoding="utf-8")
    assert "### Ranking each context's candidates (raw)" in report
    assert "best-of-4: the oracle's pick" in report


def test_ranking_table_lists_rows_and_reference_picks():
    raw = {"ranking_pairwise_accuracy": (0.6, 0.01, 3), "ranking_top1_random": (0.25, 0.0, 3)}
    for k in (4, 8, 16):
        raw |= {f"ranking_best_of_{k}": (0.3, 0.02, 3)}
        raw |= {
            f"ranking_best_of_{k}_{p}": (v, 0.0, 3)
            for p, v in (("oracle", 0.5), ("random", 0.1), ("first", 0.2))
        }
    lines = ranking_table({"soft": {"raw": raw}})
    assert "| `soft` | 0.6000 ± 0.0100 | – | – | 0.3000 ± 0.0200 |" in "\n".join(lines)
    assert any("best-of-16: the oracle's pick 0.5000, a random pick 0.1000" in x for x in lines)
    assert ranking_table({"soft": {"raw": {"soft_ce": (1.0, 0.1, 3)}}}) == []


@pytest.mark.parametrize(("name", "cells"), [("study-ranking", 21), ("study-finetune", 12)])
def test_shipped_study_grids_parse(name, cells):
    assert len(build_cells(load_study(f"configs/{name}.yaml"))) == cells
