"""Who said what survives every loader (issue 14): the annotator ids each loader fills come back
unchanged when the data set is written in the native JSONL or CSV format and read again."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bayespref.data import load_dataset, load_lewidi, load_mi, load_native
from bayespref.data.convabuse import load_convabuse
from bayespref.data.schema import AnnotatedDataset
from conftest import shared_data

SEVERITIES = ("1", "0", "-1", "-2", "-3")


def write_native(dataset: AnnotatedDataset, folder: Path) -> tuple[Path, Path]:
    """The data set as native JSONL and CSV files (labels as class names, annotator ids)."""
    names = dataset.label_space.names
    jsonl, table = folder / "data.jsonl", folder / "data.csv"
    with jsonl.open("w", encoding="utf-8") as fh:
        for ex in dataset.examples:
            assert ex.annotations is not None
            record = {
                "id": ex.id,
                "context": ex.context,
                "response": ex.response,
                "labels": [names[c] for _, c in ex.annotations],
                "annotators": [who for who, _ in ex.annotations],
            }
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    with table.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "context", "response", "labels", "annotators"])
        for ex in dataset.examples:
            assert ex.annotations is not None
            writer.writerow(
                [
                    ex.id,
                    json.dumps(ex.context, ensure_ascii=False),
                    ex.response,
                    json.dumps([names[c] for _, c in ex.annotations]),
                    json.dumps([who for who, _ in ex.annotations], ensure_ascii=False),
                ]
            )
    meta = {"names": list(names), "utilities": list(dataset.label_space.utilities)}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return jsonl, table


def assert_round_trip(dataset: AnnotatedDataset, folder: Path) -> None:
    assert all(ex.annotations for ex in dataset.examples)
    for path in write_native(dataset, folder):
        again = load_native(path)
        assert [ex.id for ex in again] == [ex.id for ex in dataset]
        assert [ex.annotations for ex in again] == [ex.annotations for ex in dataset], path
        np.testing.assert_array_equal(again.counts(), dataset.counts())


def test_lewidi_annotator_ids_round_trip(tmp_path):
    items = {
        "1": {"text": "a tweet", "annotators": "Ann1,Ann2,Ann3", "annotations": "0,0,1"},
        "2": {"text": "another, with a comma", "annotators": "Ann2,Ann5", "annotations": "1,1"},
    }
    path = tmp_path / "HS-Brexit_train.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    dataset = load_lewidi(path)
    assert dataset[0].annotations == [("Ann1", 0), ("Ann2", 0), ("Ann3", 1)]
    (tmp_path / "out").mkdir()
    assert_round_trip(dataset, tmp_path / "out")


def test_convabuse_per_annotator_columns_round_trip(tmp_path):
    header = ["example_id", "prev_agent", "prev_user", "agent", "user"]
    for k in (1, 2, 3):
        header += [f"Annotator{k}_is_abuse.{s}" for s in SEVERITIES]
    one_hot = {s: ["1" if t == s else "0" for t in SEVERITIES] for s in SEVERITIES}
    rows = [
        ["1.0", "hi", "hello", "how are you?", "go away", *one_hot["-1"], *[""] * 5, *one_hot["1"]],
        ["2.0", "", "", "hello", "fine thanks", *one_hot["1"], *one_hot["0"], *[""] * 5],
    ]
    path = tmp_path / "ConvAbuseEMNLPtrain.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    dataset = load_convabuse(path)
    assert dataset[0].annotations == [("Ann1", 2), ("Ann3", 0)]
    assert dataset[1].annotations == [("Ann1", 0), ("Ann2", 1)]
    (tmp_path / "out").mkdir()
    assert_round_trip(dataset, tmp_path / "out")


def test_mi_annotator_ids_round_trip(tmp_path):
    path = tmp_path / "MI Dataset.csv"
    path.write_text(
        "dialog_id,turn,author,text,ann1,ann2,judge 1 annotation,judge 2 annotation\n"
        "d1,1,speaker,I drink too much.,-,-,-,-\n"
        "d1,2,listener,What worries you?,Open Question,Affirm,-,Warn\n",
        encoding="utf-8",
    )
    dataset = load_mi(path)
    assert dataset[0].annotations == [("ann1", 0), ("ann2", 1), ("judge2", 2)]
    (tmp_path / "out").mkdir()
    assert_round_trip(dataset, tmp_path / "out")


def test_synthetic_annotators_are_the_simulated_pool_and_round_trip(tmp_path):
    dataset = load_dataset("synthetic", n=40, seed=5, max_annotators=4)
    ids = {who for ex in dataset for who, _ in ex.annotations or []}
    assert ids <= {f"W{k:02d}" for k in range(1, 21)} and len(ids) > 4
    for ex in dataset:  # the annotations are the counts, one label per simulated annotator
        labels = [c for _, c in ex.annotations or []]
        np.testing.assert_array_equal(np.bincount(labels, minlength=3), ex.counts)
        assert len({who for who, _ in ex.annotations or []}) == len(labels)
    assert_round_trip(dataset, tmp_path)


@pytest.mark.shared
def test_real_lewidi_annotator_ids_round_trip(tmp_path):
    dataset = load_lewidi(shared_data("lewidi2023", "HS-Brexit_dev.json"))
    assert {who for ex in dataset for who, _ in ex.annotations or []} == {
        f"Ann{k}" for k in range(1, 7)
    }
    assert_round_trip(dataset, tmp_path)
