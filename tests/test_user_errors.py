"""A new user's mistakes (issue 12): each is one line naming the key or file:line, exit 2, no
traceback; and the silent wrong results that are now refused.

CLI cases go through ``bayespref.cli.main``; data cases through the loaders. The tiny random
encoder of conftest keeps the few that build a model fast.
"""

from __future__ import annotations

import csv
import json
import re
import sys

import numpy as np
import pytest

from bayespref.cli import main
from bayespref.config import ConfigError
from bayespref.data import (
    DataError,
    LabelSpace,
    as_label_space,
    load_convabuse,
    load_dataset,
    load_lewidi,
    load_mi,
    load_native,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = {"names": ["bad", "good"], "utilities": [0, 1]}
SPACE_OVERRIDE = "data.label_space={names: [bad, good], utilities: [0, 1]}"


def fails(argv: list[str], capsys) -> str:
    """Run the CLI, expect exit 2 and exactly one error line (no traceback); return it."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("bayespref ")]
    assert len(lines) == 1, err
    return lines[0]


def write_jsonl(path, *records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def native_items(n: int) -> list[dict]:
    return [
        {
            "context": f"turn {k}",
            "response": f"reply number {k}",
            "labels": ["good", "bad"][: 1 + k % 2],
        }
        for k in range(n)
    ]


# --- 1. the label space: one spelling, `names` ----------------------------------------------


def test_without_a_label_space_the_error_gives_the_config_key_that_works(tmp_path, capsys):
    data = write_jsonl(tmp_path / "mine.jsonl", *native_items(3))
    line = fails(
        ["train", "data.format=native", f"data.train={data}", f"output_dir={tmp_path / 'r'}"],
        capsys,
    )
    assert line.startswith(f"bayespref train: error: {data}: no classes declared: ")
    assert "data.label_space={names: [bad, ok, good], utilities: [-1, 0, 1]}" in line
    assert 'mine.meta.json or meta.json beside the data containing {"names": [' in line
    assert "classes'" not in line and "'classes'" not in line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "data.label_space={classes: [bad, good], utilities: [0, 1]}",
            r"error: data\.label_space: unknown label-space key\(s\) \['classes'\] \(the classes "
            r"go under 'names'\); the keys are \['names', 'utilities', 'tie_break', 'aliases'\]",
        ),
        (
            "label_space={names: [bad, good], utilities: [0, 1]}",
            r"error: config key label_space was never a top-level key: use data\.label_space="
            r"\{names: \[bad, ok, good\], utilities: \[-1, 0, 1\]\}",
        ),
        (
            "data.label_space={names: [bad, good]}",
            r"error: data\.label_space: 'utilities' must be a list of numbers, one per class",
        ),
    ],
)
def test_other_label_space_spellings_are_one_line_naming_the_right_keys(
    tmp_path, capsys, override, expected
):
    data = write_jsonl(tmp_path / "mine.jsonl", *native_items(3))
    line = fails(["train", "data.format=native", f"data.train={data}", override], capsys)
    assert re.search(expected, line), line
    assert not (tmp_path / "runs").exists()


def test_a_sidecar_with_classes_is_refused_naming_names(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", *native_items(2))
    (tmp_path / "meta.json").write_text(
        json.dumps({"classes": ["bad", "good"], "utilities": [0, 1]})
    )
    with pytest.raises(DataError, match=r"meta\.json: bad label space: unknown label-space key"):
        load_native(path)
    with pytest.raises(DataError, match=r"the classes go under 'names'"):
        load_native(path, label_space={"classes": ["bad", "good"], "utilities": [0, 1]})


def test_the_label_space_a_run_writes_is_the_one_it_reads(tmp_path):
    space = LabelSpace(("bad", "ok", "good"), (-1.0, 0.0, 1.0), "first", (("meh", "ok"),))
    assert LabelSpace.from_dict(space.to_dict()) == space
    assert as_label_space(json.loads(json.dumps(space.to_dict()))) == space
    with pytest.raises(ValueError, match=r"'names' must be a list of class names"):
        LabelSpace.from_dict({"utilities": [0, 1]})  # was KeyError: 'names'


def test_training_on_your_own_jsonl_with_data_label_space_names(tmp_path, capsys, tiny_encoder_dir):
    data = write_jsonl(tmp_path / "mine.jsonl", *native_items(12))
    argv = [
        "train",
        "data.format=native",
        f"data.train={data}",
        SPACE_OVERRIDE,
        f"model.encoder={tiny_encoder_dir}",
        "model.max_length=32",
        "optim.batch_size=4",
        "optim.max_steps=1",
        "eval_every=1",
        "progress=false",
        f"output_dir={tmp_path / 'runs'}",
        "name=mine",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "validation metrics of the best checkpoint" in out
    assert "synthetic data:" not in out  # the note is for synthetic data only
    stats = json.loads((tmp_path / "runs" / "mine" / "data_stats.json").read_text())
    assert stats["label_space"]["names"] == ["bad", "good"]
    # what the run wrote is a valid data.label_space (and meta.json) as it stands
    assert as_label_space(stats["label_space"]).names == ("bad", "good")


# --- 3. one line where a traceback was -------------------------------------------------------


def test_an_empty_file_and_a_header_only_csv_are_one_line_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    header = tmp_path / "header.csv"
    header.write_text("response,labels\n")
    for path in (empty, header):
        line = fails(
            [
                "train",
                "data.format=native",
                f"data.train={path}",
                SPACE_OVERRIDE,
                f"output_dir={tmp_path / 'runs'}",
            ],
            capsys,
        )
        assert line == (
            f"bayespref train: error: {path}: nothing to train on: it holds no items "
            "(an empty file, or a CSV header without rows)"
        )


def test_a_split_whose_items_are_all_skipped_says_why(tmp_path):
    from bayespref.config import DataConfig
    from bayespref.data.splits import load_split

    path = write_jsonl(tmp_path / "v.jsonl", {"response": "r", "labels": [None]})
    config = DataConfig(format="native", train=path, label_space=SPACE)
    with pytest.raises(DataError, match=r"v\.jsonl: nothing to evaluate: every item was skipped"):
        load_split(config, path, "valid")


def test_an_output_dir_that_is_a_file_is_refused_and_left_alone(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("keep me")
    line = fails(["train", f"output_dir={blocker}"], capsys)
    assert line == (
        f"bayespref train: error: output_dir: {blocker} exists and is not a folder; choose "
        "another output_dir (runs go to <output_dir>/<name>/)"
    )
    assert blocker.read_text() == "keep me"
    line = fails(["train", f"output_dir={blocker / 'deeper'}"], capsys)  # a file above it
    assert f"output_dir: {blocker} exists and is not a folder" in line


def test_hf_without_columns_names_the_option(tmp_path, capsys):
    pytest.importorskip("datasets")
    line = fails(
        ["train", "data.format=hf", f"data.train={tmp_path / 'ds'}", SPACE_OVERRIDE], capsys
    )
    assert line.startswith(
        "bayespref train: error: data.train: format 'hf' needs the option(s) ['columns']: "
        "columns={response: <column>, labels: <column>}"
    )


def test_hf_without_the_datasets_library_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` fails, find_spec: None
    line = fails(
        [
            "train",
            "data.format=hf",
            f"data.train={tmp_path}",
            "data.options={columns: {response: r, labels: l}}",
        ],
        capsys,
    )
    assert line == (
        "bayespref train: error: data.format=hf reads Hugging Face datasets, and the `datasets` "
        "library is not installed: pip install 'bayespref[datasets]'"
    )


def test_evaluating_a_synthetic_run_on_a_file_says_to_give_its_format(tmp_path, capsys, pm_run):
    data = write_jsonl(tmp_path / "my.jsonl", *native_items(3))
    line = fails(["evaluate", "--run", pm_run, "--data", data], capsys)
    assert line.startswith(f"bayespref evaluate: error: {data}: data.format is synthetic, ")
    assert "`bayespref evaluate --format native`" in line


def test_evaluating_data_with_other_classes_is_one_line(tmp_path, capsys, pm_run):
    data = write_jsonl(tmp_path / "my.jsonl", *native_items(3))
    (tmp_path / "meta.json").write_text(json.dumps(SPACE))
    line = fails(["evaluate", "--run", pm_run, "--data", data, "--format", "native"], capsys)
    assert line.startswith(
        f"bayespref evaluate: error: {data}: the data's classes ['bad', 'good'] differ from the "
        "model's ['harmful', 'neutral', 'supportive']"
    ), line


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.dropout=1.5", "model.dropout must be in [0, 1), got 1.5"),
        ("model.head_hidden=0", "model.head_hidden must be >= 1 or null, got 0"),
        ("optim.max_steps=0", "optim.max_steps must be >= 1 or null, got 0"),
        ("optim.epochs=-1", "optim.epochs must be a finite number > 0, got -1.0"),
        ("optim.adam_betas=[0.9]", "optim.adam_betas must be two numbers in [0, 1), got [0.9]"),
        ("optim.lr=1e400", "optim.lr must be a finite number > 0, got inf"),
        ("data.format=yaml", "data.format must be one of ['native', 'lewidi', "),
        (
            "data.train={n: 50, sed: 3}",
            "data.train: unknown option(s) ['sed'] for format 'synthetic'; its options: ['n', ",
        ),
        (
            "data.options={n: 50, sed: 3}",
            "data.options: unknown option(s) ['sed'] for format 'synthetic'; its options: ['n', ",
        ),
        (
            "data.train=my.jsonl",
            "data.train='my.jsonl': format synthetic generates its data and reads no file; give "
            "the file's format (data.format=native",
        ),
        ("data.format=native", "data.train: format 'native' needs a file (data.train=<path>)"),
    ],
)
def test_bad_values_are_refused_when_the_config_is_read(tmp_path, capsys, override, message):
    line = fails(["train", override, f"output_dir={tmp_path / 'runs'}"], capsys)
    assert line.startswith(f"bayespref train: error: {message}"), line
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_max_length_beyond_the_encoders_positions_is_one_line(tmp_path, capsys, tiny_encoder_dir):
    line = fails(
        [
            "train",
            f"model.encoder={tiny_encoder_dir}",
            "model.max_length=100000",
            "data.train={n: 40, seed: 1}",
            f"output_dir={tmp_path / 'runs'}",
            "progress=false",
        ],
        capsys,
    )
    assert line == (
        f"bayespref train: error: model.max_length=100000 is more than {tiny_encoder_dir} takes "
        "(256 tokens): set model.max_length=256 or less"
    )


def test_an_unknown_encoder_offline_fails_at_once(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    def no_call(*args, **kwargs):
        raise AssertionError("the hub must not be asked when HF_HUB_OFFLINE is set")

    monkeypatch.setattr(huggingface_hub, "model_info", no_call)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    line = fails(
        [
            "train",
            "model.encoder=nobody/no-such-encoder",
            "data.train={n: 40, seed: 1}",
            f"output_dir={tmp_path / 'runs'}",
            "progress=false",
        ],
        capsys,
    )
    assert line == (
        "bayespref train: error: model.encoder: 'nobody/no-such-encoder' is not a local folder "
        "nor in the Hugging Face cache, and the hub is off (HF_HUB_OFFLINE): the model is not "
        "available offline; pass a local folder (model.encoder=/path/to/model) or download it "
        "first (hf download nobody/no-such-encoder)"
    )


def test_an_unknown_model_without_network_or_on_the_hub_is_one_line(monkeypatch, tmp_path):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    from bayespref.lm import require_pretrained

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    calls = []

    def unreachable(name, timeout=None):
        calls.append(timeout)
        raise OSError("Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", unreachable)
    with pytest.raises(
        ConfigError,
        match=r"^model\.encoder: 'a/b' is not a local folder nor in "
        r"the Hugging Face cache, and the hub cannot be reached \(OSError\)",
    ):
        require_pretrained("a/b", "model.encoder")
    assert calls == [10]  # asked once, with a time limit: no retries

    class TransportError(Exception):  # how httpx (the hub's HTTP library) names its family
        pass

    class ConnectError(TransportError):
        pass

    def no_route(name, timeout=None):
        raise ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", no_route)
    with pytest.raises(ConfigError, match=r"the hub cannot be reached \(ConnectError\)"):
        require_pretrained("a/b", "model.encoder")

    def missing(name, timeout=None):
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(error, "404 Client Error: Repository Not Found")
        raise error

    monkeypatch.setattr(huggingface_hub, "model_info", missing)
    with pytest.raises(ConfigError, match=r"^generator\.name: no model 'a/b' on the Hugging Face"):
        require_pretrained("a/b", "generator.name")
    require_pretrained(str(tmp_path), "model.encoder")  # a local folder: nothing asked


def test_a_200_kb_csv_field_loads(tmp_path):
    path = tmp_path / "long.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["context", "response", "labels"])
        writer.writerow(["c" * 200_000, "a long one", "good"])
        writer.writerow(["", "r" * 200_000, "bad"])
    before = csv.field_size_limit()
    ds = load_native(path, label_space=SPACE)
    assert [len(ex.context[0]) if ex.context else 0 for ex in ds] == [200_000, 0]
    assert len(ds[1].response) == 200_000
    assert csv.field_size_limit() == before  # the module's limit is left as it was


def test_the_unterminated_string_message_reads_once(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"response": "unfinished, "labels": ["good"]}\n{"response": "x\n')
    with pytest.raises(DataError) as err:
        load_native(path, label_space=SPACE)
    assert "at at" not in str(err.value)
    assert str(err.value).startswith(f"{path}:1: bad JSON: Expecting ',' delimiter at column ")
    path.write_text('{"response": "unfinished\n')
    with pytest.raises(DataError, match=r":1: bad JSON: Unterminated string starting at column 14"):
        load_native(path, label_space=SPACE)


def test_an_unknown_option_to_evaluate_is_one_line(tmp_path, capsys, pm_run):
    data = write_jsonl(tmp_path / "my.jsonl", *native_items(3))
    line = fails(
        ["evaluate", "--run", pm_run, "--data", data, "--format", "native", "--option", "sep=;"],
        capsys,
    )
    assert line.startswith("bayespref evaluate: error: data.options: unknown option(s) ['sep']")


# --- 4. silent wrong results, now refused -----------------------------------------------------


@pytest.mark.parametrize("blank", ["", "   ", "\n\t"])
def test_native_jsonl_and_csv_refuse_an_empty_response_at_its_line(tmp_path, blank):
    path = write_jsonl(
        tmp_path / "t.jsonl",
        {"response": "fine", "labels": ["good"]},
        {"context": "hello", "response": blank, "labels": ["bad"]},
    )
    with pytest.raises(
        DataError, match=r"t\.jsonl:2: the response is empty \(or whitespace only\)"
    ):
        load_native(path, label_space=SPACE)
    csv_path = tmp_path / "t.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["response", "labels"], ["fine", "good"], [blank, "bad"]])
    with pytest.raises(DataError, match=r"t\.csv:3: the response is empty"):
        load_native(csv_path, label_space=SPACE)


def test_lewidi_refuses_an_empty_text_and_an_empty_user_turn(tmp_path):
    item = {"annotators": "Ann1,Ann2", "annotations": "0,1"}
    path = tmp_path / "HS-Brexit_train.json"
    path.write_text(json.dumps({"1": {**item, "text": "ok"}, "2": {**item, "text": " "}}, indent=1))
    with pytest.raises(DataError, match=r"_train\.json:\d+: item '2': the response is empty"):
        load_lewidi(path)
    turns = {"prev_agent": "a", "prev_user": "b", "agent": "c", "user": ""}
    path = tmp_path / "ConvAbuse_train.json"
    item = {"annotators": "Ann1", "annotations": "1", "text": json.dumps(turns)}
    path.write_text(json.dumps({"7": item}))
    with pytest.raises(DataError, match=r"item '7': the response is empty .* \(the 'user' turn"):
        load_lewidi(path)


def test_convabuse_and_mi_refuse_an_empty_response_at_its_line(tmp_path):
    groups = [f"Annotator1_is_abuse.{s}" for s in (1, 0, -1, -2, -3)]
    path = tmp_path / "ConvAbuseEMNLPtrain.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["example_id", "prev_agent", "prev_user", "agent", "user", *groups])
        writer.writerow(["1.0", "hi", "hey", "how are you", "fine", "1", "0", "0", "0", "0"])
        writer.writerow(["2.0", "hi", "hey", "how are you", "  ", "1", "0", "0", "0", "0"])
    with pytest.raises(DataError, match=r"train\.csv:3: column 'user': the response is empty"):
        load_convabuse(path)
    path = tmp_path / "MI Dataset.csv"
    header = [
        "dialog_id",
        "turn",
        "author",
        "text",
        "ann1",
        "ann2",
        "judge 1 annotation",
        "judge 2 annotation",
    ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerow(["d", "1", "speaker", "I drink too much", "-", "-", "-", "-"])
        writer.writerow(["d", "2", "listener", "", "Affirm", "-", "-", "-"])
    with pytest.raises(DataError, match=r"Dataset\.csv:3: column 'text': the response is empty"):
        load_mi(path)


def test_hf_refuses_an_empty_response_at_its_row(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = datasets.Dataset.from_dict({"reply": ["fine", ""], "votes": [["good"], ["bad"]]})
    data.save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match=r"ds: row 2: the response is empty"):
        load_dataset(
            "hf",
            tmp_path / "ds",
            columns={"response": "reply", "labels": "votes"},
            label_space=SPACE,
        )


@pytest.mark.parametrize("context", [0, False, {}, 5, 1.5, [1], ["ok", None]])
def test_a_context_is_a_string_a_list_of_strings_or_null(tmp_path, context):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        {"context": None, "response": "no context", "labels": ["good"]},
        {"context": "", "response": "no context either", "labels": ["good"]},
        {"context": context, "response": "r", "labels": ["good"]},
    )
    with pytest.raises(
        DataError, match=r"c\.jsonl:3: 'context' must be a string or a list of strings \(or null"
    ):
        load_native(path, label_space=SPACE)
    path = write_jsonl(tmp_path / "ok.jsonl", {"response": "r", "labels": ["good"]})
    assert load_native(path, label_space=SPACE)[0].context == []


def test_the_model_refuses_empty_responses_and_bad_contexts_by_index(tiny_encoder_dir):
    from bayespref.config import ModelConfig
    from bayespref.model import PreferenceModel

    model = PreferenceModel.build(
        ModelConfig(encoder=tiny_encoder_dir, max_length=32), as_label_space(SPACE)
    )
    q = model.predict_proba([None, "hi", ["a", "b"]], ["one", "two", "three"])
    assert q.shape == (3, 2) and np.allclose(q.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match=r"^response 1 \(0-based\) is empty or not a string: ' '"):
        model.predict_proba(["x", "y"], ["fine", " "])
    with pytest.raises(ValueError, match=r"^response 0 \(0-based\) is empty"):
        model.score([None], [""])
    with pytest.raises(ValueError, match=r"^context 1 \(0-based\) must be a string, a list of"):
        model.score(["x", 0], ["fine", "fine"])
