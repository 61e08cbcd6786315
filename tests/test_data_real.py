"""The loaders on the real files in ../shared/data, checked against the raw files."""

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from bayespref.data import load_dataset

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

pytestmark = pytest.mark.shared

LEWIDI_SIZES = {
    "MD-Agreement": (6592, 1104),
    "HS-Brexit": (784, 168),
    "ArMIS": (657, 141),
    "ConvAbuse": (2398, 812),
}
SEVERITIES = ("1", "0", "-1", "-2", "-3")


def shared(*parts: str) -> Path:
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"../shared/data not found: {path.resolve()} (real-data tests need it)")
    return path


def raw_convabuse(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return {row["example_id"]: row for row in csv.DictReader(f)}


@pytest.mark.parametrize(("split", "rows"), [("train", 2501), ("valid", 831)])
def test_convabuse_csv_counts_and_spot_checks(split, rows):
    path = shared("convabuse", f"ConvAbuseEMNLP{split}.csv")
    ds = load_dataset("convabuse", path)
    report = ds.report
    assert report.read == rows and report.kept + report.skipped == report.read
    assert report.kept == rows  # every item has 2 to 7 annotators
    assert 2 <= ds.counts().sum(axis=1).min() and ds.counts().sum(axis=1).max() <= 8
    raw = raw_convabuse(path)
    for example in random.Random(0).sample(ds.examples, 25) + [ds[0]]:
        row = raw[example.id]
        assert example.response == row["user"]
        assert example.context == [
            row[c] for c in ("prev_agent", "prev_user", "agent") if row[c].strip()
        ]
        expected = []
        for k in range(1, 9):
            cells = [row[f"Annotator{k}_is_abuse.{s}"] for s in SEVERITIES]
            if any(cells):  # first repeat of each annotator: the position of its "1"
                first = [c.split(",")[0].strip() for c in cells]
                expected.append((f"Ann{k}", first.index("1")))
        assert example.annotations == expected


def test_convabuse_first_repeat_matches_lewidi():
    """Where LeWiDi's ConvAbuse and the original CSVs share an item and an annotator, the label
    agrees: LeWiDi kept the first of an annotator's repeat annotations, as we do."""
    lewidi = {}
    for split in ("train", "dev"):
        ds = load_dataset(
            "lewidi", shared("lewidi2023", f"ConvAbuse_{split}.json"), label_scheme="severity"
        )
        for e in ds:
            lewidi.setdefault((tuple(e.context), e.response), []).append(dict(e.annotations))
    shared_labels = agree = 0
    for split in ("train", "valid"):
        for e in load_dataset("convabuse", shared("convabuse", f"ConvAbuseEMNLP{split}.csv")):
            for theirs in lewidi.get((tuple(e.context), e.response), []):
                for who, label in e.annotations:
                    if who in theirs:
                        shared_labels += 1
                        agree += theirs[who] == label
    assert shared_labels > 9000 and agree == shared_labels


@pytest.mark.parametrize("dataset", list(LEWIDI_SIZES))
def test_lewidi_counts_and_spot_checks(dataset):
    for split, size in zip(("train", "dev"), LEWIDI_SIZES[dataset], strict=True):
        path = shared("lewidi2023", f"{dataset}_{split}.json")
        ds = load_dataset("lewidi", path)
        assert (ds.report.read, ds.report.kept, ds.report.skipped) == (size, size, 0)
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert [e.id for e in ds] == list(raw)
        for example in random.Random(1).sample(ds.examples, 20):
            item = raw[example.id]
            labels = item["annotations"].split(",")
            if dataset == "ConvAbuse":
                labels = ["1" if int(s) < 0 else "0" for s in labels]
                turns = json.loads(item["text"])
                assert example.response == turns["user"]
            else:
                assert example.response == item["text"] and example.context == []
            assert example.annotations == list(
                zip(item["annotators"].split(","), map(int, labels), strict=True)
            )
            # our counts reproduce LeWiDi's own soft label
            soft = [item["soft_label"]["0"], item["soft_label"]["1"]]
            np.testing.assert_allclose(example.counts / example.counts.sum(), soft, atol=0.006)
