"""The native format's optional ``true_distribution`` and ``group`` fields (JSONL and CSV):
read into ``AnnotatedExample.true_distribution`` and ``meta["group"]``, absent as before, and
every malformed value a one-line DataError with file and line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bayespref.data import DataError, LabelSpace, load_native

SPACE = LabelSpace(names=("bad", "ok", "good"), utilities=(-1.0, 0.0, 1.0))


def jsonl(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_jsonl_fields_are_read_and_stay_optional(tmp_path):
    path = jsonl(
        tmp_path / "d.jsonl",
        {"response": "a", "labels": ["ok"], "true_distribution": [0.2, 0.3, 0.5], "group": "c1"},
        {"response": "b", "labels": ["ok"], "true_distribution": [0, 1, 0], "group": 7},
        {"response": "c", "labels": ["good"], "source": "beam"},
    )
    ds = load_native(path, label_space=SPACE)
    np.testing.assert_allclose(ds[0].true_distribution, [0.2, 0.3, 0.5])
    assert ds[0].true_distribution.dtype == np.float64
    assert ds[0].meta == {"group": "c1"}
    assert ds[1].meta == {"group": "7"}  # an integer id, kept as a string
    assert ds[2].true_distribution is None and ds[2].meta == {"source": "beam"}
    assert ds.true_distributions() is None  # not every item has one
    both = load_native(jsonl(tmp_path / "e.jsonl", *[json.loads(x) for x in [
        '{"response": "a", "labels": ["ok"], "true_distribution": [0.2, 0.3, 0.5]}',
        '{"response": "b", "labels": ["ok"], "true_distribution": [0, 1, 0]}',
    ]]), label_space=SPACE)  # fmt: skip
    np.testing.assert_allclose(both.true_distributions(), [[0.2, 0.3, 0.5], [0, 1, 0]])


def test_csv_cells(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        'response,labels,true_distribution,group\na,ok,"[0.1, 0.1, 0.8]",g1\nb,bad,,\n',
        encoding="utf-8",
    )
    ds = load_native(path, label_space=SPACE)
    np.testing.assert_allclose(ds[0].true_distribution, [0.1, 0.1, 0.8])
    assert ds[0].meta == {"group": "g1"}
    assert ds[1].true_distribution is None and ds[1].meta == {}


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("true_distribution", [0.5, 0.5], "a list of 3 probabilities"),
        ("true_distribution", [0.5, 0.5, 0.5], "must sum to 1, got 1.5"),
        ("true_distribution", [1.2, -0.2, 0.0], "non-negative"),
        ("true_distribution", ["a", 0.5, 0.5], "a list of 3 probabilities"),
        ("true_distribution", [True, 0, 0], "a list of 3 probabilities"),
        ("true_distribution", {"ok": 1}, "a list of 3 probabilities"),
        ("group", [1], "'group' must be a string or an integer, got list"),
        ("group", False, "'group' must be a string or an integer, got bool"),
    ],
)
def test_bad_values_name_file_and_line(tmp_path, field, value, match):
    path = jsonl(
        tmp_path / "d.jsonl", {"response": "a", "labels": ["ok"]}, {"response": "b", "labels": ["ok"], field: value}
    )  # fmt: skip
    with pytest.raises(DataError, match=match) as info:
        load_native(path, label_space=SPACE)
    assert "d.jsonl:2" in str(info.value)


def test_bad_csv_cell(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("response,labels,true_distribution\na,ok,[0.1 0.9\n", encoding="utf-8")
    with pytest.raises(DataError, match="JSON list of probabilities"):
        load_native(path, label_space=SPACE)
