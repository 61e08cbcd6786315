"""The output files of ``evaluate`` and ``score`` never replace something else.

- ``evaluate --data X/valid.jsonl`` does not overwrite ``eval/valid.json`` (the run's own
  validation split): every evaluation file records its ``source``, default names never
  collide across data files, and an explicit ``--output`` holding another source's evaluation
  is refused;
- ``score --output`` equal to ``--input`` is refused before anything is written; a directory as
  ``--output`` is one line, with no stray ``<output>.tmp``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from bayespref.cli import main as cli_main
from bayespref.config import ConfigError
from bayespref.data import load_dataset
from bayespref.scoring import score_file

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture
def run(tmp_path, pm_run) -> Path:
    """A copy of the session's tiny trained run (these tests write into it)."""
    return Path(shutil.copytree(pm_run, tmp_path / "pm"))


def write_native(path: Path, n: int, seed: int) -> Path:
    """``n`` synthetic items as a native JSONL file, with the run's classes in meta.json."""
    dataset = load_dataset("synthetic", n=n, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "id": e.id,
            "context": list(e.context),
            "response": e.response,
            "counts": [int(c) for c in e.counts],
        }
        for e in dataset
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (path.parent / "meta.json").write_text(json.dumps(dataset.label_space.to_dict()))
    return path


def error_line(capsys, command: str) -> str:
    """The one line a known failure prints last on stderr, with no traceback."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"bayespref {command}: error: "), err
    return last


def short_hash(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]


# -- evaluate ---------------------------------------------------------------------------------


def test_evaluations_of_different_data_files_never_overwrite_each_other(run, tmp_path, capsys):
    evaluate = ["evaluate", "--run", str(run), "--format", "native"]
    assert cli_main(["evaluate", "--run", str(run)]) == 0
    own = run / "eval" / "valid.json"
    own_text = own.read_text()
    assert json.loads(own_text)["source"] == "validation split of the run"

    # a file named valid.jsonl: its own name (a hash of its path), the run's valid.json intact
    a = write_native(tmp_path / "a" / "valid.jsonl", 12, seed=3)
    assert cli_main([*evaluate, "--data", str(a)]) == 0
    a_json = run / "eval" / f"valid-{short_hash(a)}.json"
    assert f"written: {a_json}" in capsys.readouterr().out
    assert own.read_text() == own_text
    assert json.loads(a_json.read_text())["source"] == str(a.resolve())
    assert json.loads(a_json.read_text())["n"] == 12

    # another file of another name: <stem>.json; then a third with that stem: hashed
    b = write_native(tmp_path / "b" / "test.jsonl", 10, seed=4)
    c = write_native(tmp_path / "c" / "test.jsonl", 8, seed=5)
    assert cli_main([*evaluate, "--data", str(b)]) == 0
    b_json = run / "eval" / "test.json"
    b_text = b_json.read_text()
    assert cli_main([*evaluate, "--data", str(c)]) == 0
    c_json = run / "eval" / f"test-{short_hash(c)}.json"
    assert json.loads(c_json.read_text())["n"] == 8
    assert b_json.read_text() == b_text

    # the same data again replaces its own evaluation (the same name as before)
    assert cli_main([*evaluate, "--data", str(b)]) == 0
    assert json.loads(b_json.read_text())["source"] == str(b.resolve())
    assert sorted(p.name for p in (run / "eval").iterdir()) == sorted(
        ["valid.json", a_json.name, "test.json", c_json.name]
    )
    assert own.read_text() == own_text


def test_an_evaluation_written_before_sources_were_recorded_is_not_overwritten(
    run, tmp_path, capsys
):
    """A ``valid.json`` from an older version that evaluated a data file (its ``data`` field
    names the file): the run's own split goes to a name of its own."""
    other = write_native(tmp_path / "x" / "valid.jsonl", 12, seed=3)
    old = run / "eval" / "valid.json"
    old.parent.mkdir()
    old.write_text(json.dumps({"data": str(other), "n": 12, "model": {}}))
    before = old.read_text()
    assert cli_main(["evaluate", "--run", str(run)]) == 0
    assert old.read_text() == before
    digest = hashlib.sha256(b"validation split of the run").hexdigest()[:8]
    assert (run / "eval" / f"valid-{digest}.json").is_file()


def test_an_explicit_output_holding_something_else_is_refused_before_evaluating(
    run, tmp_path, capsys, monkeypatch
):
    data = write_native(tmp_path / "d" / "mine.jsonl", 12, seed=3)
    out = tmp_path / "report.json"
    assert cli_main(["evaluate", "--run", str(run), "--output", str(out)]) == 0
    report = out.read_text()

    def no_evaluation(*args, **kwargs):
        raise AssertionError("evaluated although the output is refused")

    monkeypatch.setattr("bayespref.cli.preference.evaluate_run", no_evaluation)
    evaluate = ["evaluate", "--run", str(run), "--format", "native", "--data", str(data)]
    assert cli_main([*evaluate, "--output", str(out)]) == 2
    err = error_line(capsys, "evaluate")
    assert f"--output {out} already holds the evaluation of validation split of the run" in err
    assert out.read_text() == report

    notes = tmp_path / "notes.json"
    notes.write_text('["my own notes"]')
    assert cli_main([*evaluate, "--output", str(notes)]) == 2
    assert "a file that is not an evaluation" in error_line(capsys, "evaluate")
    assert notes.read_text() == '["my own notes"]'

    assert cli_main([*evaluate, "--output", str(data)]) == 2
    assert f"--output {data} is the --data file" in error_line(capsys, "evaluate")
    assert cli_main([*evaluate, "--output", str(tmp_path)]) == 2
    assert "is a directory" in error_line(capsys, "evaluate")
    assert len(data.read_text().splitlines()) == 12  # the data file is intact


# -- score --------------------------------------------------------------------------------------


def pairs_file(path: Path) -> Path:
    path.write_text(
        json.dumps({"id": "a", "context": "I lost my job", "response": "I'm so sorry."})
        + "\n"
        + json.dumps({"id": "b", "response": "whatever"})
        + "\n"
    )
    return path


def test_score_refuses_to_write_over_its_input_before_anything_is_written(
    run, tmp_path, capsys, monkeypatch
):
    pairs = pairs_file(tmp_path / "pairs.jsonl")
    original = pairs.read_text()
    link = tmp_path / "link.jsonl"
    link.hardlink_to(pairs)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the output is refused")

    monkeypatch.setattr("bayespref.scoring.PreferenceModel.from_run", no_model)
    for output in (pairs, tmp_path / "." / "pairs.jsonl", link):
        argv = ["score", "--run", str(run), "--input", str(pairs), "--output", str(output)]
        assert cli_main(argv) == 2
        err = error_line(capsys, "score")
        assert f"output {output} is the input file" in err and "nothing was written" in err
    assert pairs.read_text() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.jsonl", "pairs.jsonl", "pm"]


def test_score_to_a_directory_is_one_line_and_leaves_no_temporary_file(run, tmp_path, capsys):
    pairs = pairs_file(tmp_path / "pairs.jsonl")
    outdir = tmp_path / "outdir"
    outdir.mkdir()
    argv = ["score", "--run", str(run), "--input", str(pairs), "--output", str(outdir)]
    assert cli_main(argv) == 2
    err = error_line(capsys, "score")
    assert f"output {outdir} is a directory" in err and str(outdir / "scored.jsonl") in err
    assert not (tmp_path / "outdir.tmp").exists() and list(outdir.iterdir()) == []
    # what the message suggests works
    assert cli_main([*argv[:-1], str(outdir / "scored.jsonl")]) == 0
    assert [json.loads(line)["id"] for line in (outdir / "scored.jsonl").open()] == ["a", "b"]
    assert sorted(p.name for p in outdir.iterdir()) == ["scored.jsonl"]


def test_a_failed_write_leaves_neither_a_temporary_file_nor_a_partial_output(
    run, tmp_path, monkeypatch
):
    pairs = pairs_file(tmp_path / "pairs.jsonl")
    out = tmp_path / "scored.jsonl"
    out.write_text("the previous scores\n")
    real_dumps = json.dumps
    calls = {"n": 0}

    def full_disk(obj, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_dumps(obj, **kwargs)

    monkeypatch.setattr("bayespref.scoring.json.dumps", full_disk)
    with pytest.raises(OSError, match="No space left"):
        score_file(run, pairs, out)
    assert out.read_text() == "the previous scores\n"  # the earlier output is intact
    assert not (tmp_path / "scored.jsonl.tmp").exists()
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="is the input file"):
        score_file(run, pairs, pairs)


def test_score_refuses_input_rows_that_already_hold_its_output_fields(tmp_path, run, capsys):
    """A user's own ``score`` or ``probs`` field would be overwritten: refused with file:line,
    nothing written."""
    responses = tmp_path / "responses.jsonl"
    rows = [{"response": "That sounds hard."}, {"response": "ok", "score": 4, "probs": [1]}]
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "scored.jsonl"
    argv = ["score", "--run", str(run), "--input", str(responses), "--output", str(out)]
    assert cli_main(argv) == 2
    line = error_line(capsys, "score")
    assert f"{responses}:2" in line and "['probs', 'score']" in line
    assert not out.exists() and not out.with_name(out.name + ".tmp").exists()


@pytest.mark.parametrize("context", [0, False, {}, 5])
def test_score_refuses_a_context_that_is_not_text(tmp_path, run, capsys, context):
    """A falsy context (0, false, {}) is not quietly taken as "no context"."""
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"context": context, "response": "hi"}) + "\n")
    out = tmp_path / "scored.jsonl"
    argv = ["score", "--run", str(run), "--input", str(responses), "--output", str(out)]
    assert cli_main(argv) == 2
    line = error_line(capsys, "score")
    assert f"{responses}:1" in line and "'context' must be a string or a list of strings" in line


def test_too_few_training_items_for_one_batch_is_one_line(tmp_path, tiny_encoder_dir, capsys):
    argv = [
        "train",
        f"output_dir={tmp_path}",
        f"model.encoder={tiny_encoder_dir}",
        "data.train={n: 6, seed: 1}",
        "data.valid={n: 4, seed: 2}",
        "optim.batch_size=8",
        "progress=false",
    ]
    assert cli_main(argv) == 2
    line = error_line(capsys, "train")
    assert "6 training items are fewer than one global batch of 8" in line
    assert "optim.batch_size" in line
