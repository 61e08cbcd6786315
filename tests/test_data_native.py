"""The native JSONL/CSV format: hand-checked loads, and every kind of malformed input."""

import json
import logging

import numpy as np
import pytest

from bayespref.data import DataError, LabelSpace, load_dataset, load_native

SPACE = LabelSpace(
    names=("bad", "ok", "good"), utilities=(-1.0, 0.0, 1.0), aliases=(("meh", "ok"),)
)
SPACE_CONFIG = {"names": ["bad", "ok", "good"], "utilities": [-1, 0, 1], "aliases": {"meh": "ok"}}


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, *records):
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


def test_jsonl_hand_checked(tmp_path):
    path = jsonl(
        tmp_path / "train.jsonl",
        {
            "id": "a",
            "context": ["hi", "I failed"],
            "response": "So sorry.",
            "labels": ["good", "good", "bad", None],
            "annotators": ["w1", "w2", "w3", "w4"],
        },
        {"context": "just one turn", "response": "Whatever.", "counts": {"bad": 3, "meh": 1}},
        {"response": "Ok.", "counts": [0, 2, 1], "source": "forum"},
        {"response": "no labels", "labels": [None, ""]},
        {"id": 7, "context": "", "response": "idx", "labels": [2, "1", "meh"]},
    )
    ds = load_native(path, label_space=SPACE)
    assert [e.id for e in ds] == ["a", "train.jsonl:2", "train.jsonl:3", "7"]
    np.testing.assert_array_equal(ds.counts(), [[1, 0, 2], [3, 1, 0], [0, 2, 1], [0, 2, 1]])
    assert ds[0].context == ["hi", "I failed"]
    assert ds[0].annotations == [("w1", 2), ("w2", 2), ("w3", 0)]  # the null annotator is gone
    assert ds[1].context == ["just one turn"] and ds[1].annotations is None
    assert ds[2].context == [] and ds[2].meta == {"source": "forum"}
    assert ds[3].context == []
    report = ds.report
    assert (report.read, report.kept, report.skipped) == (5, 4, 1)
    assert report.reasons == {"no usable label": 1}
    assert report.examples_of_skips == [f"{path}:4: no usable label"]


def test_jsonl_blank_lines_and_line_numbers(tmp_path):
    path = write(
        tmp_path / "d.jsonl",
        '\n{"response": "a", "labels": ["ok"]}\n\n{"response": "b", "labels": ["ok"]}\n',
    )
    ds = load_native(path, label_space=SPACE)
    assert [e.id for e in ds] == ["d.jsonl:2", "d.jsonl:4"]


def test_csv_hand_checked(tmp_path):
    path = write(
        tmp_path / "d.csv",
        "id,context,response,labels,annotators,topic\n"
        'x1,"hello ||| I lost my job",That is hard.,good|good|bad,w1|w2|w3,jobs\n'
        'x2,"[""one"", ""two, with comma""]","multi\nline reply","[""bad"", null, 1]",,misc\n'
        "x3,,Fine.,good||meh,,misc\n"
        "x4,,Nobody.,,,misc\n",
    )
    ds = load_native(path, label_space=SPACE)
    assert [e.id for e in ds] == ["x1", "x2", "x3"]
    assert ds[0].context == ["hello", "I lost my job"]
    assert ds[0].annotations == [("w1", 2), ("w2", 2), ("w3", 0)]
    assert ds[1].context == ["one", "two, with comma"] and ds[1].response == "multi\nline reply"
    assert ds[1].annotations is None
    np.testing.assert_array_equal(ds.counts(), [[1, 0, 2], [1, 1, 0], [0, 1, 1]])
    assert ds[0].meta == {"topic": "jobs"}
    # x2's quoted reply spans lines 3-4, so x3 is on line 5 and x4 on line 6.
    assert ds.report.examples_of_skips == [f"{path}:6: no usable label"]
    assert (ds.report.read, ds.report.kept, ds.report.skipped) == (4, 3, 1)


def test_csv_count_columns(tmp_path):
    path = write(
        tmp_path / "d.csv",
        "response,count_bad,count_good,count_meh\nA,1,2,\nB,0,0,0\n",
    )
    ds = load_native(path, label_space=SPACE)
    np.testing.assert_array_equal(ds.counts(), [[1, 0, 2]])
    assert ds.report.skipped == 1


def test_label_space_from_sidecar(tmp_path):
    path = jsonl(tmp_path / "train.jsonl", {"response": "r", "labels": ["good"]})
    write(tmp_path / "meta.json", json.dumps({"names": ["x", "good"], "utilities": [0, 1]}))
    assert load_native(path).label_space.names == ("x", "good")
    write(tmp_path / "train.meta.json", json.dumps(SPACE_CONFIG))  # the stem's file wins
    ds = load_native(path)
    assert ds.label_space == SPACE and ds[0].counts.tolist() == [0, 0, 1]


def test_label_space_from_config_mapping(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", {"response": "r", "labels": ["meh"]})
    assert load_native(path, label_space=SPACE_CONFIG)[0].counts.tolist() == [0, 1, 0]


def test_missing_label_space_says_how_to_declare(tmp_path):
    path = jsonl(tmp_path / "d.jsonl", {"response": "r", "labels": ["good"]})
    with pytest.raises(DataError, match=r"label_space=.*d\.meta\.json or meta\.json"):
        load_native(path)


def test_report_is_logged(tmp_path, caplog):
    path = jsonl(
        tmp_path / "d.jsonl", {"response": "r", "labels": ["good"]}, {"response": "s", "labels": []}
    )
    with caplog.at_level(logging.INFO, logger="bayespref.data"):
        load_native(path, label_space=SPACE)
    assert f"{path}: read 2, kept 1, skipped 1 (1 no usable label)" in caplog.text


def test_strict_turns_skips_into_errors(tmp_path):
    path = jsonl(
        tmp_path / "d.jsonl",
        {"response": "r", "labels": ["good"]},
        {"response": "s", "counts": [0, 0, 0]},
    )
    assert len(load_native(path, label_space=SPACE)) == 1
    with pytest.raises(DataError, match=r"d\.jsonl:2: no usable label.*strict=True"):
        load_native(path, label_space=SPACE, strict=True)


# --- malformed input: always an error, whatever `strict` is --------------------------------


@pytest.mark.parametrize("strict", [False, True])
def test_bad_json_line_names_path_and_line(tmp_path, strict):
    path = write(
        tmp_path / "d.jsonl",
        '{"response": "a", "labels": ["ok"]}\n{"response": "b", "labels": ["ok"]}\n{"response": "c", "labels": [\n',
    )
    with pytest.raises(DataError) as err:
        load_native(path, label_space=SPACE, strict=strict)
    assert f"{path}:3:" in str(err.value) and "bad JSON" in str(err.value)
    assert err.value.line == 3 and err.value.path == str(path)


def test_unknown_label_lists_allowed(tmp_path):
    path = jsonl(
        tmp_path / "d.jsonl",
        {"response": "a", "labels": ["ok"]},
        {"response": "b", "labels": ["great"]},
    )
    with pytest.raises(DataError) as err:
        load_native(path, label_space=SPACE)
    message = str(err.value)
    assert message.startswith(f"{path}:2: unknown label 'great'")
    assert "['bad', 'ok', 'good', 'meh']" in message


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"context": "c", "labels": ["ok"]}, "missing required field 'response'"),
        ({"response": 3, "labels": ["ok"]}, "'response' must be a string"),
        ({"response": "r", "labels": "ok"}, "'labels' must be a list"),
        (
            {"response": "r", "context": [1], "labels": ["ok"]},
            "'context' must be a string or a list",
        ),
        ({"response": "r"}, "neither is present"),
        ({"response": "r", "labels": ["ok"], "counts": [1, 0, 0]}, "not both"),
        ({"response": "r", "counts": [1, 0]}, "'counts' has 2 entries but there are 3 classes"),
        ({"response": "r", "counts": [1, -1, 0]}, "non-negative integers"),
        ({"response": "r", "counts": [1.5, 0, 0]}, "non-negative integers"),
        ({"response": "r", "counts": {"great": 1}}, "unknown label 'great'"),
        (
            {"response": "r", "labels": ["ok", "ok"], "annotators": ["w1"]},
            "'annotators' has 1 entries",
        ),
        ({"id": ["x"], "response": "r", "labels": ["ok"]}, "'id' must be a string or an integer"),
    ],
)
def test_malformed_records(tmp_path, record, problem):
    path = jsonl(tmp_path / "d.jsonl", {"response": "fine", "labels": ["ok"]}, record)
    with pytest.raises(DataError, match=rf"d\.jsonl:2: .*{problem}"):
        load_native(path, label_space=SPACE)


def test_non_object_line(tmp_path):
    path = write(tmp_path / "d.jsonl", '["response", "labels"]\n')
    with pytest.raises(DataError, match=r"d\.jsonl:1: expected a JSON object per line, got list"):
        load_native(path, label_space=SPACE)


def test_duplicate_id_names_both_lines(tmp_path):
    path = jsonl(
        tmp_path / "d.jsonl",
        {"id": "a", "response": "x", "labels": ["ok"]},
        {"id": "b", "response": "y", "labels": ["ok"]},
        {"id": "a", "response": "z", "labels": ["ok"]},
    )
    with pytest.raises(DataError, match=r"d\.jsonl:3: duplicate id 'a' \(first seen on line 1\)"):
        load_native(path, label_space=SPACE)


def test_not_utf8_names_line_and_byte(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(
        b'{"response": "ok", "labels": ["ok"]}\n{"response": "caf\xe9", "labels": ["ok"]}\n'
    )
    with pytest.raises(DataError) as err:
        load_native(path, label_space=SPACE)
    assert err.value.line == 2 and "not valid UTF-8" in str(err.value)
    # line 1 is 36 bytes + newline; line 2 starts with the 17 bytes {"response": "caf
    assert "byte offset 54" in str(err.value)


def test_utf8_bom_and_crlf_are_fine(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffresponse,labels\r\nCafé,ok|good\r\n".encode())
    ds = load_native(path, label_space=SPACE)
    assert ds[0].response == "Café" and ds[0].counts.tolist() == [0, 1, 1]


def test_csv_truncated_row(tmp_path):
    path = write(tmp_path / "d.csv", "id,context,response,labels\na,,r,ok\nb,,r2\n")
    with pytest.raises(DataError, match=r"d\.csv:3: row has 3 fields but the header has 4"):
        load_native(path, label_space=SPACE)


def test_csv_unterminated_quote(tmp_path):
    path = write(tmp_path / "d.csv", 'response,labels\n"fine",ok\n"never closed,ok\n')
    with pytest.raises(DataError, match=r"d\.csv:\d+: bad CSV"):
        load_native(path, label_space=SPACE)


def test_csv_missing_response_column(tmp_path):
    path = write(tmp_path / "d.csv", "id,text,labels\na,r,ok\n")
    with pytest.raises(DataError, match=r"d\.csv:1: missing required column 'response'"):
        load_native(path, label_space=SPACE)


def test_csv_unknown_label_and_count_column(tmp_path):
    path = write(tmp_path / "d.csv", "response,labels\nr,ok|great\n")
    with pytest.raises(DataError, match=r"d\.csv:2: unknown label 'great'; allowed"):
        load_native(path, label_space=SPACE)
    path = write(tmp_path / "e.csv", "response,count_ok,count_great\nr,1,1\n")
    with pytest.raises(DataError, match=r"e\.csv:1: column 'count_great': unknown label"):
        load_native(path, label_space=SPACE)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="file_format"):
        load_native(write(tmp_path / "d.txt", ""), label_space=SPACE)
    with pytest.raises(DataError, match="file not found"):
        load_native(tmp_path / "nope.jsonl", label_space=SPACE)


def test_dispatcher_passes_options(tmp_path):
    path = jsonl(
        tmp_path / "d.jsonl", {"response": "r", "labels": ["ok"]}, {"response": "s", "labels": []}
    )
    ds = load_dataset("native", path, label_space=SPACE)
    assert len(ds) == 1 and ds.report.skipped == 1
    with pytest.raises(DataError, match="strict=True"):
        load_dataset("native", path, strict=True, label_space=SPACE)
