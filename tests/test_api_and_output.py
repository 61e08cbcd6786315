"""The Python API across calls, progress on long work, and what the commands print (issue 12).

- ``bayespref.train`` & co. keep working for any number of calls, before and after
  ``import bayespref.train`` (subprocesses: the import order is the point);
- feature encoding and evaluation passes have a bar (none with ``progress=false``); a step that
  spans several epochs is said once;
- matplotlib's font-cache line stays out of the output; ``generate`` prints its summary once;
- under the demo's table, a note says why the train mean can win on ``soft_ce`` and ``ece``;
- the README and docs/data.md say what the code does.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bayespref.cli import main
from bayespref.cli.notes import synthetic_note

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )


def tiny_overrides(out: Path, encoder: str, name: str) -> list[str]:
    return [
        f"output_dir={out}",
        f"name={name}",
        f"model.encoder={encoder}",
        "model.max_length=32",
        "model.freeze_encoder=true",
        "data.train={n: 24, seed: 1}",
        "data.valid={n: 8, seed: 2}",
        "optim.batch_size=8",
        "optim.max_steps=1",
        "eval_every=1",
        "progress=false",
    ]


# --- the Python API -------------------------------------------------------------------------


def test_the_python_api_trains_twice_in_one_session(tmp_path, tiny_encoder_dir):
    overrides = tiny_overrides(tmp_path / "runs", tiny_encoder_dir, "one")
    code = f"""
        import bayespref
        config = bayespref.load_config(None, {overrides!r})
        first = bayespref.train(config)
        config.name = "two"
        second = bayespref.train(config)          # was: 'module' object is not callable
        third = bayespref.train(bayespref.load_config(None, {overrides!r} + ["name=three"]))
        print([r.run_dir.name for r in (first, second, third)])
        print(bayespref.evaluate_run(str(first.run_dir))["n"])
        print(bayespref.PreferenceModel.from_run(first.run_dir).label_space.num_classes)
        print(type(bayespref.TrainConfig()).__name__)
    """
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [line for line in done.stdout.splitlines() if not line.startswith("step ")]
    assert printed == ["['one', 'two', 'three']", "8", "3", "TrainConfig"]


def test_the_python_api_after_importing_the_submodules_first(tmp_path):
    missing = tmp_path / "missing.jsonl"
    code = f"""
        import bayespref.train, bayespref.evaluation, bayespref.model, bayespref.config
        import bayespref
        from bayespref.train import PreferenceTask      # the submodule is still importable
        from bayespref.data import DataError
        config = bayespref.load_config(
            None, ["data.format=native", "data.train={missing}", "output_dir=runs"]
        )
        for call in range(2):                           # any number of calls
            try:
                bayespref.train(config)                 # a function, not the module
            except DataError as err:
                print("DataError", err.problem)
        print(type(bayespref.train).__name__)
        print(callable(bayespref.evaluate_run), callable(bayespref.load_config))
        print(bayespref.PreferenceModel.__name__, bayespref.TrainConfig.__name__)
        print(sys.modules["bayespref.train"].train is bayespref.train)
    """
    done = run_python("import sys\n" + textwrap.dedent(code), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "DataError file not found",
        "DataError file not found",
        "function",
        "True True",
        "PreferenceModel TrainConfig",
        "True",
    ]


# --- progress ----------------------------------------------------------------------------------


def test_feature_encoding_and_evaluation_show_a_bar_unless_progress_is_false(
    tiny_encoder_dir, capsys
):
    from bayespref.config import ModelConfig
    from bayespref.data import load_dataset
    from bayespref.evaluation import encode_split, evaluate_split
    from bayespref.model import PreferenceModel

    dataset = load_dataset("synthetic", n=10, seed=0)
    config = ModelConfig(encoder=tiny_encoder_dir, max_length=32, freeze_encoder=True)
    model = PreferenceModel.build(config, dataset.label_space)
    split = encode_split(model, dataset, 0.1, progress=True)
    evaluate_split(model, split, batch_size=4, progress=True)
    err = capsys.readouterr().err
    assert "encoder features:" in err and "/10 [" in err  # 10 items
    assert "evaluate:" in err and "/3 [" in err  # in batches of 4
    split = encode_split(model, dataset, 0.1, progress=False)
    evaluate_split(model, split, batch_size=4, progress=False)
    encode_split(model, dataset, 0.1)  # default: a bar on a terminal only (captured: none)
    assert capsys.readouterr().err == ""


def test_a_step_longer_than_an_epoch_is_said_once(tmp_path, tiny_encoder_dir, caplog):
    from bayespref.config import load_config
    from bayespref.train import train

    overrides = tiny_overrides(tmp_path, tiny_encoder_dir, "accum")
    config = load_config(None, [*overrides, "optim.batch_size=4", "optim.grad_accum=15"])
    with caplog.at_level(logging.WARNING, logger="bayespref.trainer"):
        train(config)
    said = [r.getMessage() for r in caplog.records if "spans" in r.getMessage()]
    # 24 items, batches of 4: 6 micro-batches an epoch, 15 of them a step
    assert said == ["one optimiser step spans 2.5 epochs: lower optim.grad_accum"]


# --- what the commands print --------------------------------------------------------------------


def test_matplotlibs_font_cache_line_stays_out_of_the_output(tmp_path):
    # A fresh font cache (empty MPLCONFIGDIR), and matplotlib's 5 s delay cut to none, so that
    # its "building the font cache" warning fires while the command modules are imported.
    code = """
        import threading, time
        class Now(threading.Timer):
            def __init__(self, interval, function, *args, **kwargs):
                super().__init__(0, function, *args, **kwargs)
        threading.Timer = Now
        import bayespref.cli
        time.sleep(0.5)
        import matplotlib.font_manager
        print("imported")
    """
    done = run_python(code, tmp_path, MPLCONFIGDIR=str(tmp_path / "mpl"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "imported"
    assert "font cache" not in done.stderr, done.stderr


def test_the_font_cache_warning_is_what_the_test_above_would_see(tmp_path):
    """The check above is real: without the CLI's setting the same import prints the line."""
    code = """
        import threading, time
        class Now(threading.Timer):
            def __init__(self, interval, function, *args, **kwargs):
                super().__init__(0, function, *args, **kwargs)
        threading.Timer = Now
        import matplotlib.pyplot
        time.sleep(0.5)
    """
    done = run_python(code, tmp_path, MPLCONFIGDIR=str(tmp_path / "mpl"))
    assert "Matplotlib is building the font cache" in done.stderr


def test_generate_prints_its_summary_once(tmp_path, char_generator_dir, pm_run, capsys, caplog):
    config = [
        f"output_dir={tmp_path / 'runs'}",
        f"generator.name={char_generator_dir}",
        "generator.max_context_tokens=40",
        "generator.max_target_tokens=12",
        "data.n=6",
        "data.n_eval=2",
        f"scorer.run={pm_run}",
        "decoding.num_beams=2",
        "decoding.num_beam_groups=2",
        "decoding.max_new_tokens=4",
        "decoding.min_new_tokens=1",
        f"candidates={tmp_path / 'candidates.jsonl'}",
        "progress=false",
    ]
    with caplog.at_level(logging.INFO):
        assert main(["generate", *config]) == 0
    out = capsys.readouterr().out
    summary = [line for line in out.splitlines() if line.startswith("candidates: ")]
    assert len(summary) == 1 and summary[0].startswith("candidates: 4 contexts, ")
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert not [m for m in logged if m.startswith("candidates: ")], logged
    with caplog.at_level(logging.INFO):
        assert main(["generate", *config]) == 0  # reused: the same one line
    assert capsys.readouterr().out.count("candidates: 4 contexts, ") == 1


def test_the_synthetic_note_explains_the_demo_table():
    # the demo's own numbers (issue 12): the model loses on soft_ce and ece, wins on kl_true
    model = {"soft_ce": 1.150, "ece": 0.248, "kl_true": 0.187, "accuracy": 0.6}
    baseline = {"soft_ce": 1.080, "ece": 0.030, "kl_true": 0.403, "accuracy": 0.4}
    note = synthetic_note(model, baseline)
    assert note.count("\n") == 1  # two lines
    assert "kl_true is the distance to the true distribution p*" in note
    assert "1-7 noisy\nsimulated annotators, which is flatter than p*" in note
    assert note.endswith(
        "the train mean wins on soft_ce, ece while the model is nearer the truth (lower kl_true)."
    )
    # a model that is not nearer the truth is not called so
    note = synthetic_note(model | {"kl_true": 0.5}, baseline)
    assert note.endswith("which is flatter than p*: judge a model here by kl_true.")
    assert synthetic_note(model, None).endswith("judge a model here by kl_true.")


def test_train_on_synthetic_data_prints_the_note_under_the_table(
    tmp_path, tiny_encoder_dir, capsys
):
    assert main(["train", *tiny_overrides(tmp_path, tiny_encoder_dir, "demo")]) == 0
    out = capsys.readouterr().out
    table_end = out.index("kl_true")
    note = out.index("synthetic data: kl_true is the distance to the true distribution p*")
    assert table_end < note < out.index("run directory:")


# --- the docs say what the code does ------------------------------------------------------------


def test_the_readme_and_data_docs_use_the_spellings_the_code_reads():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    data_doc = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    assert "--input responses.jsonl" in readme and "--output dpo-pairs.jsonl" in readme
    assert "pairs.jsonl " not in readme.replace("dpo-pairs.jsonl", "")
    assert "data.label_space: {names: [bad, ok, good], utilities: [-1, 0, 1]}" in readme
    assert '"classes"' not in data_doc and "label_space: {names: [bad, ok, good]" in data_doc
    assert "6 min 15 s" not in readme.replace("took 6 min 15 s", "")  # only as the old figure
    # the README's label-space example is one the code accepts
    from bayespref.config import load_config

    config = load_config(None, ["data.label_space={names: [bad, ok, good], utilities: [-1, 0, 1]}"])
    assert (
        json.dumps(config.data.label_space)
        == '{"names": ["bad", "ok", "good"], "utilities": [-1, 0, 1]}'
    )
