"""Pairwise data (issue 15, item 1): every schema read from a fixture written in it, votes
checked by hand; malformed rows are DataErrors with file and line (fuzzed); synthetic pairs
carry P* from the oracle's utilities (Rao-Kupper, hand-derived) and the annotators' votes."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayespref.data.pairwise import load_pairwise, pairs_from_records
from bayespref.data.schema import DataError
from bayespref.data.synthetic.pairs import SCALE, THETA, make_synthetic_pairs, rao_kupper

FIXTURES = Path(__file__).parent / "fixtures" / "pairwise"


def test_native_votes_and_annotations():
    data = load_pairwise(FIXTURES / "native.jsonl")
    first, second, third = data.examples
    assert first.counts.tolist() == [3, 1, 1] and first.margin == 1.5
    assert first.context == ["I failed my exam."]
    assert second.context == ["My dog died.", "I miss him."]
    assert second.annotations == [("W01", 1), ("W02", 1), ("7", 2)]
    assert second.counts.tolist() == [0, 2, 1]
    assert third.id == "native-4" and third.context == [] and third.counts.tolist() == [0, 2, 0]


def test_trl_text_and_conversational():
    text = load_pairwise(FIXTURES / "trl_text.jsonl")
    assert [(e.context, e.response_a, e.response_b) for e in text.examples] == [
        (["What is 2+2?"], "4", "5"),
        (["Say hi."], "Hi!", "No."),
    ]
    assert all(e.counts.tolist() == [1, 0, 0] for e in text.examples)
    assert text.examples[1].margin == 2.0
    chat = load_pairwise(FIXTURES / "trl_conversational.jsonl")
    assert chat.examples[0].context == ["What color is the sky?"]
    assert (chat.examples[0].response_a, chat.examples[0].response_b) == ("Blue.", "Green.")
    # implicit prompt: the turns before the last message of "chosen"
    assert chat.examples[1].context == ["Hi"]
    assert chat.examples[1].response_a == "Hello! How can I help?"


def test_multipref_votes_from_both_annotator_groups():
    (pair,) = load_pairwise(FIXTURES / "multipref.jsonl").examples
    assert pair.id == "c-001"
    assert pair.annotations == [("n1", 0), ("n2", 0), ("e1", 2), ("e2", 1)]
    assert pair.counts.tolist() == [2, 1, 1]


def test_helpsteer2_individual_strengths_and_margin():
    first, second = load_pairwise(FIXTURES / "helpsteer2.jsonl").examples
    # strengths -3, -2 (response 1 = A better), 1 (B), 0 (tie)
    assert first.counts.tolist() == [2, 1, 1] and first.margin == 2.0
    # no individual strengths: the aggregate +3 is one vote for B
    assert second.counts.tolist() == [0, 1, 0] and second.margin == 3.0


def test_hf_rows_are_numbered_by_row():
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}, {"prompt": "p", "chosen": ""}]
    with pytest.raises(DataError, match=r"^hf:train: row 2: 'chosen' must be a non-empty"):
        pairs_from_records(rows, "hf:train")


BAD_ROWS = [
    ('{"response_a": "x", "response_b": "y"}', "give exactly one of 'votes'"),
    ('{"response_a": "x", "response_b": "y", "votes": {"A": 1}, "annotations": []}', "exactly"),
    ('{"response_a": "", "response_b": "y", "votes": {"A": 1}}', "'response_a' is empty"),
    ('{"response_a": "x", "votes": {"A": 1}}', "missing or non-string 'response_b'"),
    ('{"response_a": "x", "response_b": "y", "votes": {"C": 1}}', "unknown outcome 'C'"),
    ('{"response_a": "x", "response_b": "y", "votes": {"A": -1}}', "integers in 0"),
    ('{"response_a": "x", "response_b": "y", "votes": {"A": 0}}', "the pair has no votes"),
    ('{"response_a": "x", "response_b": "y", "votes": {"A": 1}, "margin": -1}', "'margin'"),
    ('{"response_a": "x", "response_b": "y", "context": 3, "votes": {"A": 1}}', "'context'"),
    ('{"response_a": "x", "response_b": "y", "annotations": [{"label": "A"}]}', "'annotator'"),
    ('{"id": "p1", "response_a": "x", "response_b": "y", "votes": {"A": 1}}', "duplicate id"),
    ('{"prompt": "p", "chosen": [], "rejected": "r"}', "empty conversation"),
    ('{"text": "t", "completion_a": "a", "completion_b": "b", "normal_worker_annotations": '
     '[{"overall_pref": "A-is-better"}]}', "overall_pref must be one of"),
    ('{"prompt": "p", "response_1": "a", "response_2": "b", "preference_strength": 4}',
     "'preference_strength' must be a number in -3..3"),
    ('{"response_a": "x", "response_b": "y", "votes": {"A": 1}', "bad JSON"),
    ("[1, 2]", "expected a JSON object, got list"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_malformed_row_names_file_and_line(tmp_path, row, message):
    path = tmp_path / "pairs.jsonl"
    good = '{"id": "p1", "response_a": "a", "response_b": "b", "votes": {"A": 1}}'
    path.write_text(f"{good}\n\n{row}\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_pairwise(path)
    assert str(err.value).startswith(f"{path}:3: ")
    assert message in str(err.value)


def test_empty_file_and_unknown_format(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"empty\.jsonl: no pairs in the file"):
        load_pairwise(path)
    with pytest.raises(DataError, match="pairwise format must be auto or one of"):
        load_pairwise(path, format="csv")


@settings(
    max_examples=150, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(
    rows=st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "context",
                    "response_a",
                    "response_b",
                    "votes",
                    "annotations",
                    "margin",
                    "prompt",
                    "chosen",
                    "rejected",
                    "completion_a",
                    "response_1",
                ]
            ),  # fmt: skip
            st.recursive(
                st.none() | st.booleans() | st.integers(-5, 5) | st.floats() | st.text(max_size=5),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["A", "B", "tie", "content", "label"]), inner)
                ),
                max_leaves=6,
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_rows_load_or_fail_with_file_and_line(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("fuzz") / "pairs.jsonl"
    lines = [json.dumps(row) for row in rows]
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        data = load_pairwise(path)
    except DataError as err:
        match = re.match(rf"{re.escape(str(path))}:(\d+): ", str(err))
        assert match and 1 <= int(match.group(1)) <= len(lines), str(err)
        return
    assert len(data) == len(rows)
    for example in data.examples:
        assert example.response_a.strip() and example.response_b.strip()
        assert example.counts.sum() > 0 and (example.counts >= 0).all()


def test_rao_kupper_truth_by_hand():
    # u_A - u_B = 0.25 -> gap 1 logit: P(A) = sigmoid(1 - 0.4), P(B) = sigmoid(-1 - 0.4)
    p = rao_kupper(np.array([0.5]), np.array([0.25]))[0]
    assert SCALE == 0.25 and THETA == 0.4
    expected_a, expected_b = 1 / (1 + math.exp(-0.6)), 1 / (1 + math.exp(1.4))
    np.testing.assert_allclose(p, [expected_a, expected_b, 1 - expected_a - expected_b])
    # equal utilities: symmetric, the tie gets 1 - 2 sigmoid(-0.4)
    np.testing.assert_allclose(rao_kupper(np.zeros(1), np.zeros(1))[0, 2], math.tanh(0.2))


def test_synthetic_pairs_are_seeded_and_carry_the_truth():
    data = make_synthetic_pairs(40, seed=3)
    again = make_synthetic_pairs(40, seed=3)
    assert [e.response_b for e in data.examples] == [e.response_b for e in again.examples]
    for example in data.examples:
        assert example.true_distribution is not None
        np.testing.assert_allclose(example.true_distribution.sum(), 1.0)
        assert (example.true_distribution > 0).all()
        assert 1 <= example.num_votes <= 5
        assert len(example.annotations) == example.num_votes
        assert example.response_a != example.response_b
    assert data.counts().sum(0)[2] > 0  # ties are voted
