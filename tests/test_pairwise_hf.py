"""Pairs from a Hugging Face dataset (data.format=hf): a local save_to_disk folder read into the
same pairs as the JSON Lines readers, the config's checks, one-line errors, and one
train-pairwise run on it."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from bayespref.cli import main
from bayespref.config import ConfigError
from bayespref.config.pairwise import load_pairwise_config
from bayespref.data.pairwise import load_pairwise
from bayespref.data.schema import DataError

datasets = pytest.importorskip("datasets")
pytestmark = pytest.mark.usefixtures("one_thread")

NATIVE_ROWS = [
    # votes given as counts (no tie key: Arrow fills it with null, which counts as 0) ...
    {"id": "p1", "context": "I failed my exam.", "response_a": "That sounds hard.",
     "response_b": "Study more.", "votes": {"A": 3, "B": 1}, "annotations": None},
    # ... or per annotator (no votes: null)
    {"id": "p2", "context": None, "response_a": "Yes.", "response_b": "No.", "votes": None,
     "annotations": [{"annotator": "w1", "label": "B"}, {"annotator": "w2", "label": "tie"}]},
]  # fmt: skip


@pytest.fixture
def native_dir(tmp_path):
    path = tmp_path / "native-pairs"
    datasets.Dataset.from_list(NATIVE_ROWS).save_to_disk(str(path))
    return path


def test_a_save_to_disk_folder_reads_as_the_native_rows(native_dir):
    pairs = load_pairwise(str(native_dir), "hf")
    assert [e.id for e in pairs.examples] == ["p1", "p2"]
    # p1: votes A 3, B 1, tie missing -> 0; p2: one B, one tie
    np.testing.assert_array_equal(pairs.counts(), [[3, 1, 0], [0, 1, 1]])
    assert pairs.examples[0].context == ["I failed my exam."] and pairs.examples[1].context == []
    assert pairs.examples[1].annotations == [("w1", 1), ("w2", 2)]


def test_a_parquet_file_reads_the_same_and_other_files_are_refused(tmp_path, native_dir):
    datasets.Dataset.from_list(NATIVE_ROWS).to_parquet(str(tmp_path / "pairs.parquet"))
    pairs = load_pairwise({"path": str(tmp_path / "pairs.parquet"), "schema": "native"}, "hf")
    np.testing.assert_array_equal(pairs.counts(), load_pairwise(str(native_dir), "hf").counts())
    (tmp_path / "pairs.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.txt: cannot read '.txt' files"):
        load_pairwise(str(tmp_path / "pairs.txt"), "hf")


def test_a_dataset_dict_needs_its_split_and_trl_rows_read_by_schema(tmp_path):
    trl = {"prompt": ["Hi", "Help?"], "chosen": ["Hello!", "Sure."], "rejected": ["Go.", "No."]}
    path = tmp_path / "trl-pairs"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(trl), "test": datasets.Dataset.from_dict(trl)}
    ).save_to_disk(str(path))
    pairs = load_pairwise({"path": str(path), "split": "test", "schema": "trl"}, "hf")
    np.testing.assert_array_equal(pairs.counts(), [[1, 0, 0], [1, 0, 0]])  # chosen is A
    assert pairs.examples[1].response_a == "Sure." and pairs.examples[1].context == ["Help?"]
    with pytest.raises(DataError, match=r"give split= one of \['train', 'test'\]"):
        load_pairwise(str(path), "hf")


def test_a_malformed_row_names_the_dataset_and_row(tmp_path):
    rows = [dict(NATIVE_ROWS[0]), {**NATIVE_ROWS[0], "id": "p9", "response_b": " "}]
    path = tmp_path / "bad"
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    with pytest.raises(DataError) as err:
        load_pairwise({"path": str(path)}, "hf")
    assert str(err.value).count("\n") == 0
    assert str(path) in str(err.value) and "row 2" in str(err.value)
    assert "'response_b' is empty" in str(err.value)


def test_the_config_checks_hf_specs(native_dir, monkeypatch):
    config = load_pairwise_config(
        None, ["data.format=hf", f"data.train={{path: {native_dir}, schema: native}}"]
    )
    assert config.data.train == {"path": str(native_dir), "schema": "native"}
    with pytest.raises(ConfigError, match=r"data.train: give a dataset path or name"):
        load_pairwise_config(None, ["data.format=hf", f"data.train={{pth: {native_dir}}}"])
    with pytest.raises(ConfigError, match=r"data.valid.schema must be one of"):
        load_pairwise_config(
            None, ["data.format=hf", f"data.train={native_dir}", "data.valid={path: x, schema: y}"]
        )
    real_find_spec = importlib.util.find_spec

    def without_datasets(name, *args):
        return None if name == "datasets" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_datasets)
    with pytest.raises(ConfigError, match=r"`datasets` library is not installed"):
        load_pairwise_config(None, ["data.format=hf", f"data.train={native_dir}"])


def test_train_pairwise_runs_on_an_hf_dataset(tmp_path, tiny_encoder_dir, capsys):
    rows = [
        {"id": f"p{i}", "context": f"question {i}", "response_a": f"a kind reply {i}",
         "response_b": f"no {i}", "votes": {"A": 1 + i % 3, "B": i % 2, "tie": i % 4 == 0}}
        for i in range(24)
    ]  # fmt: skip
    for row in rows:
        row["votes"]["tie"] = int(row["votes"]["tie"])
    path = tmp_path / "pairs"
    datasets.Dataset.from_list(rows).save_to_disk(str(path))
    rc = main(
        [
            "train-pairwise",
            "data.format=hf",
            f"data.train={path}",
            "data.valid_fraction=0.25",
            f"model.encoder={tiny_encoder_dir}",
            "model.max_length=32",
            "optim.batch_size=8",
            "optim.max_steps=2",
            "eval_every=2",
            f"output_dir={tmp_path / 'runs'}",
            "name=hf",
            "progress=false",
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "runs" / "hf" / "summary.json").read_text())
    assert summary["train_pairs"] == 18 and summary["valid_pairs"] == 6
    assert summary["steps"] == 2 and np.isfinite(summary["final"]["soft_ce"])
