"""LeWiDi, ConvAbuse, MI and HF loaders on small hand-written files; the dispatcher."""

import csv
import json

import numpy as np
import pytest

from bayespref.data import (
    CONVABUSE_SEVERITY,
    LOADERS,
    MI_LABEL_SPACE,
    DataError,
    load_convabuse,
    load_dataset,
    load_lewidi,
    load_mi,
    majority_label,
)
from bayespref.data.hf import load_hf

# --- LeWiDi ------------------------------------------------------------------------------


def lewidi_item(text, annotators, annotations, **extra):
    return {
        "text": text,
        "annotators": annotators,
        "annotations": annotations,
        "lang": "en",
        **extra,
    }


def write_lewidi(path, items: dict):
    path.write_text(json.dumps(items, indent=4), encoding="utf-8")
    return path


def test_lewidi_binary_hand_checked(tmp_path):
    path = write_lewidi(
        tmp_path / "MD-Agreement_dev.json",
        {
            "1": lewidi_item("nice tweet", "Ann1,Ann2,Ann3", "0,0,1", hard_label="0"),
            "2": lewidi_item("rude tweet", "Ann4,Ann2,Ann9", "1,1,1"),
            "3": lewidi_item("unlabelled", "", ""),
        },
    )
    ds = load_lewidi(path)
    assert ds.label_space.names == ("not offensive", "offensive")
    assert ds.label_space.utilities == (1.0, 0.0)
    assert [e.id for e in ds] == ["1", "2"]
    np.testing.assert_array_equal(ds.counts(), [[2, 1], [0, 3]])
    assert ds[0].annotations == [("Ann1", 0), ("Ann2", 0), ("Ann3", 1)]
    assert ds[0].context == [] and ds[0].response == "nice tweet"
    assert ds[0].meta["hard_label"] == "0" and ds[0].meta["dataset"] == "MD-Agreement"
    assert (ds.report.read, ds.report.kept, ds.report.skipped) == (3, 2, 1)
    # json.dumps(indent=4): "{" on line 1, item "1" (5 fields) on lines 2-8, item "2"
    # (4 fields) on lines 9-14, so item "3" starts on line 15.
    assert ds.report.examples_of_skips == [f"{path}:15: no usable label"]
    with pytest.raises(DataError, match=":15: no usable label"):
        load_lewidi(path, strict=True)


@pytest.mark.parametrize(
    ("dataset", "names"),
    [
        ("HS-Brexit", ("not hate speech", "hate speech")),
        ("ArMIS", ("not misogynistic", "misogynistic")),
    ],
)
def test_lewidi_dataset_names(tmp_path, dataset, names):
    path = write_lewidi(
        tmp_path / f"{dataset}_train.json", {"7": lewidi_item("t", "Ann1,Ann2", "1,0")}
    )
    assert load_lewidi(path).label_space.names == names
    # any file name works with dataset=
    other = write_lewidi(tmp_path / "mine.json", {"7": lewidi_item("t", "Ann1,Ann2", "1,0")})
    assert load_lewidi(other, dataset=dataset).label_space.names == names
    with pytest.raises(DataError, match="pass dataset= one of"):
        load_lewidi(other)


def test_lewidi_convabuse_turns_and_schemes(tmp_path):
    turns = {
        "prev_agent": "Hi.",
        "prev_user": "",
        "agent": "How can I help?",
        "user": "you are useless",
    }
    path = write_lewidi(
        tmp_path / "ConvAbuse_dev.json",
        {"1": lewidi_item(json.dumps(turns), "Ann1,Ann3,Ann7,Ann8", "1,0,-1,-3")},
    )
    binary = load_lewidi(path)
    assert binary[0].context == ["Hi.", "How can I help?"]  # the empty prev_user is dropped
    assert binary[0].response == "you are useless"
    assert binary.label_space.names == ("not abusive", "abusive")
    assert binary[0].annotations == [("Ann1", 0), ("Ann3", 0), ("Ann7", 1), ("Ann8", 1)]
    severity = load_lewidi(path, label_scheme="severity")
    assert severity.label_space == CONVABUSE_SEVERITY
    assert severity.label_space.utilities == (1.0, 0.0, -1.0, -2.0, -3.0)
    np.testing.assert_array_equal(severity[0].counts, [1, 1, 1, 0, 1])


def test_lewidi_errors(tmp_path):
    bad_label = write_lewidi(
        tmp_path / "HS-Brexit_dev.json", {"1": lewidi_item("t", "Ann1,Ann2", "0,2")}
    )
    with pytest.raises(
        DataError,
        match=r"HS-Brexit_dev\.json:2: unknown label '2'; allowed: \['not hate speech', 'hate speech', '0', '1'\]",
    ):
        load_lewidi(bad_label)
    mismatch = write_lewidi(tmp_path / "ArMIS_dev.json", {"1": lewidi_item("t", "Ann1", "0,1")})
    with pytest.raises(DataError, match=r":2: item '1': 1 annotators but 2 annotations"):
        load_lewidi(mismatch)
    severity = write_lewidi(
        tmp_path / "ConvAbuse_x.json",
        {
            "1": lewidi_item(
                json.dumps({"prev_agent": "", "prev_user": "", "agent": "", "user": "u"}),
                "Ann1",
                "2",
            )
        },
    )
    with pytest.raises(DataError, match=r"unknown label '2'; allowed severities"):
        load_lewidi(severity)
    not_json = write_lewidi(
        tmp_path / "ConvAbuse_y.json", {"1": lewidi_item("plain text", "Ann1", "1")}
    )
    with pytest.raises(DataError, match="not the expected JSON conversation"):
        load_lewidi(not_json)
    no_text = tmp_path / "MD-Agreement_z.json"
    no_text.write_text('{\n "1": {"annotators": "Ann1", "annotations": "1"}\n}', encoding="utf-8")
    with pytest.raises(DataError, match=r":2: item '1': missing required field 'text'"):
        load_lewidi(no_text)


def test_lewidi_broken_json_and_duplicate_keys(tmp_path):
    truncated = tmp_path / "MD-Agreement_a.json"
    truncated.write_text(
        '{\n "1": {"text": "a", "annotators": "A", "annotations": "0"},\n "2": {"text": ',
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"MD-Agreement_a\.json:3: bad JSON"):
        load_lewidi(truncated)
    duplicate = tmp_path / "MD-Agreement_b.json"
    item = '{"text": "a", "annotators": "A", "annotations": "0"}'
    duplicate.write_text(f'{{\n "1": {item},\n "2": {item},\n "1": {item}\n}}', encoding="utf-8")
    with pytest.raises(DataError, match=r":4: duplicate id '1' \(also on line 2\)"):
        load_lewidi(duplicate)


# --- ConvAbuse CSV -------------------------------------------------------------------------

SEVERITY_SUFFIXES = ("1", "0", "-1", "-2", "-3")


def convabuse_csv(path, rows):
    """rows: (example_id, prev_agent, prev_user, agent, user, {annotator: five cells})."""
    header = ["example_id", "conv_id", "prev_agent", "prev_user", "agent", "user", "bot"]
    for k in (1, 2, 3):
        header += [f"Annotator{k}_is_abuse.{s}" for s in SEVERITY_SUFFIXES] + [
            f"Annotator{k}_sexist"
        ]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for example_id, pa, pu, a, u, groups in rows:
            row = [example_id, "c1", pa, pu, a, u, "E.L.I.Z.A."]
            for k in (1, 2, 3):
                row += list(groups.get(k, [""] * 5)) + [""]
            writer.writerow(row)
    return path


def one_hot(severity):
    return ["1" if s == str(severity) else "0" for s in SEVERITY_SUFFIXES]


def test_convabuse_hand_checked(tmp_path):
    path = convabuse_csv(
        tmp_path / "ConvAbuseEMNLPtiny.csv",
        [
            ("10.0", "Hello", "", "What is up?", "you idiot", {1: one_hot(-2), 3: one_hot(1)}),
            ("11.0", "a", "b", "multi\nline agent", "fine", {2: one_hot(0)}),
            # Annotator 1 labelled twice: first "1" (not abusive), then "0" (ambiguous).
            (
                "12.0",
                "a",
                "b",
                "c",
                "hmm",
                {1: ["1, 0", "0, 1", "0, 0", "0, 0", "0, 0"], 2: one_hot(-3)},
            ),
            ("13.0", "a", "b", "c", "nobody", {}),
        ],
    )
    ds = load_convabuse(path)
    assert ds.label_space == CONVABUSE_SEVERITY
    assert [e.id for e in ds] == ["10.0", "11.0", "12.0"]
    assert ds[0].context == ["Hello", "What is up?"] and ds[0].response == "you idiot"
    assert ds[0].annotations == [("Ann1", 3), ("Ann3", 0)]
    assert ds[1].context == ["a", "b", "multi\nline agent"]
    assert ds[2].annotations == [("Ann1", 0), ("Ann2", 4)]
    assert ds[0].meta == {"conv_id": "c1", "bot": "E.L.I.Z.A."}
    # The header is line 1, rows 10 and 11 start on lines 2 and 3 (11 spans 3-4), 12 on 5.
    assert ds.report.examples_of_skips == [f"{path}:6: no usable label"]
    assert (ds.report.read, ds.report.kept, ds.report.skipped) == (4, 3, 1)
    every = load_convabuse(path, repeats="all")
    assert every[2].annotations == [("Ann1", 0), ("Ann1", 1), ("Ann2", 4)]
    binary = load_convabuse(path, label_scheme="binary")
    assert binary.label_space.names == ("not abusive", "abusive")
    np.testing.assert_array_equal(binary.counts(), [[1, 1], [1, 0], [1, 1]])
    with pytest.raises(DataError, match=r":6: no usable label"):
        load_convabuse(path, strict=True)


@pytest.mark.parametrize(
    ("cells", "problem"),
    [
        (["1", "1", "0", "0", "0"], "expected exactly one severity marked 1, found 2"),
        (["0", "0", "0", "0", "0"], "expected exactly one severity marked 1, found 0"),
        (["1", "0", "0", "0", "2"], "must be 0 or 1"),
        (["1", "", "0", "0", "0"], "some severity cells are empty"),
        (["1, 1", "0", "0, 0", "0, 0", "0, 0"], "different numbers of repeat"),
    ],
)
def test_convabuse_malformed_one_hot(tmp_path, cells, problem):
    path = convabuse_csv(
        tmp_path / "c.csv",
        [
            ("1.0", "a", "b", "c", "ok", {1: one_hot(1)}),
            ("2.0", "a", "b", "c", "u", {1: one_hot(1), 2: cells}),
        ],
    )
    with pytest.raises(DataError, match=rf"c\.csv:3: Ann2: .*{problem}"):
        load_convabuse(path)


def test_convabuse_truncated_row_and_wrong_file(tmp_path):
    path = convabuse_csv(tmp_path / "c.csv", [("1.0", "a", "b", "c", "ok", {1: one_hot(1)})])
    with open(path, "a", encoding="utf-8") as f:
        f.write("2.0,c1,a,b\n")
    with pytest.raises(DataError, match=r"c\.csv:3: row has 4 fields"):
        load_convabuse(path)
    other = tmp_path / "o.csv"
    other.write_text("id,response\n1,x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"o\.csv:1: not a ConvAbuse split CSV"):
        load_convabuse(other)


# --- MI ------------------------------------------------------------------------------------

MI_HEADER = "dialog_id,turn,author,text,ann1,ann2,judge 1 annotation,judge 2 annotation\n"


def test_mi_hand_checked(tmp_path):
    path = tmp_path / "MI Dataset.csv"
    path.write_text(
        MI_HEADER
        + "d1,1,speaker,I drink too much.,-,-,-,-\n"
        + "d1,2,listener,What worries you about it?,Open Question,Open Question,-,Other\n"
        + "d1,3,speaker,My wife complains.,-,-,-,-\n"
        + "d1,4,speaker,And I feel bad.,-,-,-,-\n"
        + "d1,5,listener,You should stop now.,Advise without Permission,Direct,Confront,Warn\n"
        + "d2,2,listener,Thanks for coming.,Affirm,support,-,Give Information\n"  # turn 2 first
        + "d2,1,speaker,Hi.,-,-,-,-\n"
        + "d2,3,listener,Okay.,-,-,-,-\n",
        encoding="utf-8",
    )
    ds = load_mi(path)
    assert ds.label_space is MI_LABEL_SPACE
    assert ds.label_space.names == ("other", "MI-adherent", "MI non-adherent")
    assert ds.label_space.utilities == (0.0, 1.0, -1.0)
    assert [e.id for e in ds] == ["d1:2", "d1:5", "d2:2"]
    assert ds[0].context == ["I drink too much."]
    assert ds[1].context == ["And I feel bad."]
    assert ds[2].context == ["Hi."]  # turns are ordered by number, not file order
    np.testing.assert_array_equal(ds.counts(), [[3, 0, 0], [0, 0, 4], [1, 2, 0]])
    assert ds[0].annotations == [("ann1", 0), ("ann2", 0), ("judge2", 0)]
    assert (ds.report.read, ds.report.kept, ds.report.skipped) == (4, 3, 1)
    assert ds.report.examples_of_skips == [f"{path}:9: no usable label"]
    assert [e.context for e in load_mi(path, context_turns=2)][1] == [
        "My wife complains.",
        "And I feel bad.",
    ]
    assert load_mi(path, context_turns=None)[1].context == [
        "I drink too much.",
        "My wife complains.",
        "And I feel bad.",
    ]
    assert load_mi(path, context_turns=0)[1].context == []


def test_mi_tie_goes_to_less_preferred(tmp_path):
    # An other/adherent/non-adherent tie on two annotators each: the majority is non-adherent.
    counts = np.array([[2, 0, 2], [0, 2, 2], [2, 2, 0]])
    assert majority_label(counts, MI_LABEL_SPACE.utilities, MI_LABEL_SPACE.tie_break).tolist() == [
        2,
        2,
        0,
    ]


def test_mi_unknown_code_and_author(tmp_path):
    path = tmp_path / "mi.csv"
    path.write_text(
        MI_HEADER + "d1,1,speaker,Hi,-,-,-,-\nd1,2,listener,Yo,Reframe,-,-,-\n", encoding="utf-8"
    )
    with pytest.raises(DataError) as err:
        load_mi(path)
    assert f"{path}:3: unknown MI code 'Reframe'" in str(err.value)
    assert "'Advise without Permission'" in str(err.value) and "'Open Question'" in str(err.value)
    path.write_text(MI_HEADER + "d1,1,client,Hi,-,-,-,-\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mi\.csv:2: unknown author 'client'"):
        load_mi(path)
    path.write_text("dialog_id,turn,author,text,ann1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mi\.csv:1: missing MI columns \['ann2'"):
        load_mi(path)


def test_mi_duplicate_turn(tmp_path):
    path = tmp_path / "mi.csv"
    path.write_text(
        MI_HEADER + "d1,2,listener,A,Affirm,-,-,-\nd1,2,listener,B,Affirm,-,-,-\n", encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"mi\.csv:3: duplicate id 'd1:2' \(first seen on line 2\)"):
        load_mi(path)


def test_non_utf8_in_csv_and_json_loaders(tmp_path):
    path = tmp_path / "mi.csv"
    path.write_bytes(MI_HEADER.encode() + b"d1,1,speaker,caf\xe9,-,-,-,-\n")
    with pytest.raises(DataError, match=r"mi\.csv:2: not valid UTF-8"):
        load_mi(path)
    path = tmp_path / "ArMIS_dev.json"
    path.write_bytes(b'{\n "1": {"text": "\xff", "annotators": "Ann1", "annotations": "1"}\n}')
    with pytest.raises(DataError, match=r"ArMIS_dev\.json:2: not valid UTF-8"):
        load_lewidi(path)


def test_mi_codes_are_aliases_for_native_files():
    assert MI_LABEL_SPACE.index("Advise with Permission") == 1
    assert MI_LABEL_SPACE.index("Other") == 0


# --- HF datasets ---------------------------------------------------------------------------


def test_hf_missing_dependency_message(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match=r"pip install bayespref\[datasets\]"):
        load_hf(tmp_path, columns={"response": "r", "labels": "l"})


def test_hf_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face `datasets` is not installed")
    data = datasets.Dataset.from_dict(
        {
            "uid": ["a", "b", "c"],
            "reply": ["hello", "bye", "none"],
            "votes": [["good", "bad", None], ["ok"], [None]],
            "lang": ["en", "en", "en"],
        }
    )
    data.save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "ds" / "meta.json").write_text(
        json.dumps({"names": ["bad", "ok", "good"], "utilities": [-1, 0, 1]})
    )
    ds = load_hf(tmp_path / "ds", columns={"id": "uid", "response": "reply", "labels": "votes"})
    np.testing.assert_array_equal(ds.counts(), [[1, 0, 1], [0, 1, 0]])
    assert ds[0].meta == {"lang": "en"}
    assert ds.report.examples_of_skips == [f"{tmp_path / 'ds'} row 3: no usable label"]


def test_hf_data_file_with_counts_and_dataset_dict(tmp_path):
    datasets = pytest.importorskip("datasets", reason="Hugging Face `datasets` is not installed")
    path = tmp_path / "votes.jsonl"
    path.write_text(
        json.dumps({"history": ["hi", "I lost my job"], "reply": "sorry", "c": [0, 1, 2]})
        + "\n"
        + json.dumps({"history": [], "reply": "meh", "c": [0, 0, 0]})
        + "\n",
        encoding="utf-8",
    )
    space = {"names": ["bad", "ok", "good"], "utilities": [-1, 0, 1]}
    columns = {"context": "history", "response": "reply", "counts": "c"}
    ds = load_hf(path, columns=columns, label_space=space)
    assert ds[0].context == ["hi", "I lost my job"] and ds[0].id == "votes.jsonl:1"
    assert ds[0].counts.tolist() == [0, 1, 2] and ds.report.skipped == 1
    with pytest.raises(DataError, match="row 2: no usable label"):
        load_hf(path, columns=columns, label_space=space, strict=True)
    with pytest.raises(DataError, match=r"columns \['nope'\] not in the dataset"):
        load_hf(path, columns={"response": "nope", "counts": "c"}, label_space=space)
    bad = datasets.Dataset.from_dict({"reply": ["x"], "votes": [["great"]]})
    splits = datasets.DatasetDict({"train": bad, "test": bad})
    splits.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"pass split= one of \['train', 'test'\]"):
        load_hf(
            tmp_path / "dd", columns={"response": "reply", "labels": "votes"}, label_space=space
        )
    with pytest.raises(DataError, match=r"row 1: unknown label 'great'; allowed"):
        load_hf(
            tmp_path / "dd",
            columns={"response": "reply", "labels": "votes"},
            label_space=space,
            split="test",
        )


# --- dispatcher ----------------------------------------------------------------------------


def test_dispatcher_formats_and_options(tmp_path):
    assert set(LOADERS) == {"native", "lewidi", "convabuse", "mi", "hf", "synthetic"}
    with pytest.raises(ValueError, match=r"unknown data format 'yaml'; formats: \['native'"):
        load_dataset("yaml", "x")
    with pytest.raises(
        TypeError, match=r"unknown option 'label_shceme' for format 'lewidi'; allowed: \["
    ):
        load_dataset("lewidi", "x.json", label_shceme="binary")
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("native")
    with pytest.raises(ValueError, match="takes no path"):
        load_dataset("synthetic", "data.jsonl")
    ds = load_dataset("synthetic", n=20, seed=3, max_annotators=3)
    assert len(ds) == 20 and ds.counts().sum(axis=1).max() <= 3
    path = write_lewidi(
        tmp_path / "ConvAbuse_d.json",
        {
            "1": lewidi_item(
                json.dumps({"prev_agent": "", "prev_user": "", "agent": "", "user": "u"}),
                "Ann1",
                "-2",
            )
        },
    )
    assert load_dataset("lewidi", path, label_scheme="severity")[0].counts.tolist() == [
        0,
        0,
        0,
        1,
        0,
    ]
