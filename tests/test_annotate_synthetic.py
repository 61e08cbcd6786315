"""annotate-synthetic (issue 13 item 1): a tiny generator's beams and samples, labelled by the
synthetic annotators, split by context into native JSONL that ``bayespref train`` reads; the
candidate caches are reused and resumed, and other settings are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bayespref.annotate_synthetic as annotate_module
from bayespref.annotate_synthetic import AnnotateSyntheticConfig, annotate_synthetic
from bayespref.calibration import CandidateCacheError, read_candidates
from bayespref.cli import main
from bayespref.config import ConfigError, load_yaml
from bayespref.data import load_native
from bayespref.data.synthetic import (
    SyntheticOracle,
    default_annotator_pool,
    make_synthetic_contexts,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

REPO = Path(__file__).resolve().parents[1]


def tiny_overrides(out: Path, generator: str, *extra: str) -> list[str]:
    return [
        f"out={out}",
        "progress=false",
        f"generator.name={generator}",
        "generator.max_context_tokens=40",
        "contexts.n=6",
        "contexts.n_heldout=2",
        "contexts.n_valid=1",
        "decoding.num_beams=2",
        "decoding.num_beam_groups=2",
        "decoding.diversity_penalty=1.0",
        "decoding.max_new_tokens=8",
        "decoding.min_new_tokens=3",
        "decoding.batch_size=4",
        "sampling.num_samples=3",
        "annotators.min_annotators=2",
        "annotators.max_annotators=4",
        *extra,
    ]


def tiny_config(out: Path, generator: str, *extra: str) -> AnnotateSyntheticConfig:
    # the committed config with tiny overrides: it parses, and its keys are the ones tested here
    return load_yaml(
        AnnotateSyntheticConfig,
        REPO / "configs" / "annotate-synthetic.yaml",
        tiny_overrides(out, generator, *extra),
    )


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def annotated(tmp_path_factory, char_generator_dir):
    out = tmp_path_factory.mktemp("annotated") / "data"
    config = tiny_config(out, char_generator_dir)
    return config, annotate_synthetic(config, commit="abc123")


def test_rows_are_the_candidates_labelled_and_split_by_context(annotated):
    config, result = annotated
    out = result.out
    assert set(result.files) == {"train", "valid", "heldout"}
    rows = {split: read_rows(path) for split, path in result.files.items()}
    groups = {split: {r["group"] for r in split_rows} for split, split_rows in rows.items()}
    assert [len(groups[s]) for s in ("train", "valid", "heldout")] == [3, 1, 2]
    assert not (groups["train"] & groups["heldout"]) and not (groups["train"] & groups["valid"])
    contexts = {c["id"]: c for c in make_synthetic_contexts(6, seed=1)}
    assert set().union(*groups.values()) == set(contexts)

    beams = {r["id"]: r for r in read_candidates(out / "candidates" / "beams.jsonl")[1]}
    samples = {r["id"]: r for r in read_candidates(out / "candidates" / "samples.jsonl")[1]}
    oracle, pool_ids = SyntheticOracle(), {a.id for a in default_annotator_pool()}
    names = ("harmful", "neutral", "supportive")
    every = [r for split_rows in rows.values() for r in split_rows]
    for row in every:
        assert row["context"] == contexts[row["group"]]["context"]
        cached = (beams if row["source"] == "beam" else samples)[row["group"]]["candidates"]
        assert row["response"] == cached[row["rank"]]["text"]
        assert row["count"] == cached[row["rank"]]["count"]
        assert row["id"] == f"{row['group']}:{row['source']}{row['rank']:02d}"
        np.testing.assert_allclose(
            row["true_distribution"], oracle.distribution(row["context"], row["response"])
        )
        assert 2 <= len(row["labels"]) <= 4 and len(row["annotators"]) == len(row["labels"])
        assert set(row["annotators"]) <= pool_ids and len(set(row["annotators"])) == len(
            row["annotators"]
        )  # distinct annotators per candidate
        assert set(row["labels"]) <= set(names)
    # every unique non-blank candidate is a row, each context's beams before its samples
    n_unique = sum(
        sum(bool(c["text"].strip()) for c in r["candidates"])
        for r in [*beams.values(), *samples.values()]
    )
    assert len(every) == n_unique == result.counts["rows"]
    for group in contexts:
        sources = [r["source"] for r in every if r["group"] == group]
        assert sources == sorted(sources)  # "beam" < "sample"
    # samples: 3 drawn per context, in drawn order, each with its mean token log-probability
    for row in samples.values():
        assert row["num_generated"] == 3 and sum(c["count"] for c in row["candidates"]) == 3
        assert all(c["score"] < 0 for c in row["candidates"])

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["commit"] == "abc123"
    assert manifest["config"]["contexts"]["n"] == 6
    assert manifest["counts"]["heldout"]["contexts"] == 2
    assert manifest["counts"]["candidates_generated"] == {"sample": 18, "beam": 12}
    assert json.loads((out / "meta.json").read_text())["names"] == list(names)


def test_the_native_loader_reads_the_files(annotated):
    _, result = annotated
    dataset = load_native(result.files["heldout"])  # label space from meta.json beside it
    assert dataset.true_distributions() is not None
    assert {e.meta["group"] for e in dataset.examples} == {
        r["group"] for r in read_rows(result.files["heldout"])
    }
    assert all(e.annotations and len(e.annotations) == e.counts.sum() for e in dataset.examples)


def test_a_rerun_reuses_both_caches_and_writes_the_same_files(annotated, monkeypatch):
    config, result = annotated
    before = {split: path.read_bytes() for split, path in result.files.items()}

    def no_generator(*args, **kwargs):
        raise AssertionError("the caches are complete: nothing to generate")

    monkeypatch.setattr(annotate_module, "load_generator", no_generator)
    monkeypatch.setattr("bayespref.calibration.search.load_generator", no_generator)
    again = annotate_synthetic(config)
    assert {split: path.read_bytes() for split, path in again.files.items()} == before


def test_an_interrupted_sample_cache_resumes_to_the_same_samples(annotated, tmp_path):
    config, result = annotated
    cache = result.out / "candidates"
    copy = tmp_path / "data"
    (copy / "candidates").mkdir(parents=True)
    for name in ("beams.jsonl", "beams.meta.json", "samples.meta.json"):
        (copy / "candidates" / name).write_bytes((cache / name).read_bytes())
    lines = (cache / "samples.jsonl").read_bytes().split(b"\n")
    (copy / "candidates" / "samples.jsonl").write_bytes(
        b"\n".join(lines[:2]) + b"\n" + lines[2][:15]
    )
    resumed = annotate_synthetic(tiny_config(copy, config.generator.name))
    assert (copy / "candidates" / "samples.jsonl").read_bytes() == (
        cache / "samples.jsonl"
    ).read_bytes()
    for split, path in result.files.items():
        assert resumed.files[split].read_bytes() == path.read_bytes()


def test_other_settings_are_refused(annotated):
    config, _ = annotated
    with pytest.raises(CandidateCacheError, match="sampling.temperature"):
        annotate_synthetic(
            tiny_config(config.out_dir, config.generator.name, "sampling.temperature=0.7")
        )


def test_bayespref_train_reads_the_files_and_reports_kl_true(annotated, tiny_encoder_dir, tmp_path):
    _, result = annotated
    code = main(
        [
            "train",
            "--config",
            str(REPO / "configs" / "synthetic.yaml"),
            f"output_dir={tmp_path}",
            "name=pm",
            "data.format=native",
            f"data.train={result.files['train']}",
            f"data.valid={result.files['valid']}",
            f"model.encoder={tiny_encoder_dir}",
            "model.max_length=48",
            "optim.batch_size=4",
            "optim.max_steps=2",
            "eval_every=2",
            "progress=false",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "pm" / "summary.json").read_text())
    assert summary["select_metric"] == "kl_true" and np.isfinite(summary["best"]["kl_true"])
    stats = json.loads((tmp_path / "pm" / "data_stats.json").read_text())
    assert stats["train_items"] == len(read_rows(result.files["train"]))


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("source=greedy", "source must be one of beams|samples|both"),
        ("contexts.n_heldout=5", "leave none of 6 to train on"),
        ("annotators.max_annotators=30", "max_annotators <= 20"),
        ("sampling.top_p=0", "sampling.top_p must be in"),
    ],
)
def test_config_mistakes_are_one_line_errors(tmp_path, override, match, capsys):
    with pytest.raises(ConfigError, match=match):
        tiny_config(tmp_path, "unused", override)
    config = REPO / "configs" / "annotate-synthetic.yaml"
    args = ["annotate-synthetic", "--config", str(config), *tiny_overrides(tmp_path, "x"), override]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayespref annotate-synthetic: error:") and len(err.splitlines()) == 1
