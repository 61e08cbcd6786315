"""Calibration candidates from diverse beams, samples or both (``source``, issue 13 item 4): the
counts per context, the ranking, a training step, the cache rules (a beams-only cache keeps
today's settings and is reused; a cache of another source is refused in one line), the seeded,
resumable sampler, and the config errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bayespref.calibration import (
    CalibrationConfig,
    CandidateCacheError,
    build_candidates,
    calibrate,
    candidates_meta_path,
    read_candidates,
    rescore_candidates,
)
from bayespref.calibration import search as search_module
from bayespref.calibration.sampling import context_seed, sample_replies
from bayespref.cli import main
from bayespref.config import ConfigError, load_yaml, save_config
from bayespref.lm import GeneratorConfig, load_generator

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest

NUM_BEAMS, NUM_SAMPLES = 4, 3
# the candidate settings' keys of every beams-only cache written before `source` existed
BEAM_SETTINGS_KEYS = {"format", "generator", "scorer", "decoding", "contexts"}
BEAM_DECODING_KEYS = {
    "num_beams",
    "num_beam_groups",
    "diversity_penalty",
    "max_new_tokens",
    "min_new_tokens",
    "length_penalty",
    "early_stopping",
}


def tiny_overrides(folder: Path, generator: str, pm: str | None, *extra: str) -> list[str]:
    return [
        f"output_dir={folder / 'runs'}",
        "name=cal",
        f"generator.name={generator}",
        "generator.max_context_tokens=40",
        "generator.max_target_tokens=12",
        "data.n=10",
        "data.n_eval=2",
        f"scorer.run={pm if pm else 'null'}",
        f"decoding.num_beams={NUM_BEAMS}",
        "decoding.num_beam_groups=2",
        "decoding.max_new_tokens=6",
        "decoding.min_new_tokens=2",
        "decoding.batch_size=3",
        f"sampling.num_samples={NUM_SAMPLES}",
        f"candidates={folder / 'candidates.jsonl'}",
        "optim.batch_size=2",
        "optim.grad_accum=1",
        "optim.max_steps=1",
        "optim.lr=1e-3",
        "eval_every=1",
        "progress=false",
        *extra,
    ]


def tiny(folder: Path, generator: str, pm: str | None, *extra: str) -> CalibrationConfig:
    return load_yaml(CalibrationConfig, None, tiny_overrides(folder, generator, pm, *extra))


def multiset(row: dict) -> Counter:
    """A candidate row's texts, each as often as generated."""
    return Counter({c["text"]: c["count"] for c in row["candidates"]})


@pytest.fixture(scope="module")
def by_source(tmp_path_factory, char_generator_dir, pm_run) -> dict[str, tuple[dict, list[dict]]]:
    """Each source's PM-ranked candidate file for the same 8 training contexts."""
    files = {}
    for source in ("beams", "samples", "both"):
        folder = tmp_path_factory.mktemp(source)
        config = tiny(folder, char_generator_dir, pm_run, f"source={source}")
        files[source] = read_candidates(build_candidates(config))
    return files


def test_each_source_gives_its_candidates_per_context_ranked_by_the_pm(by_source):
    per_context = {"beams": NUM_BEAMS, "samples": NUM_SAMPLES, "both": NUM_BEAMS + NUM_SAMPLES}
    for source, (meta, rows) in by_source.items():
        assert meta["complete"] and meta["num_contexts"] == len(rows) == 8  # 10 - 2 held out
        assert meta["num_generated"] == 8 * per_context[source]
        for row in rows:
            assert row["num_generated"] == per_context[source]
            assert sum(c["count"] for c in row["candidates"]) == per_context[source]
            assert row["num_unique"] == len(row["candidates"]) == len(multiset(row))
            scores = [c["score"] for c in row["candidates"]]
            assert scores == sorted(scores, reverse=True)  # best first by the preference model
    # both = each context's beams and its samples (the same seeded draws), merged with counts
    beams, samples, both = (by_source[s][1] for s in ("beams", "samples", "both"))
    for b, s, bs in zip(beams, samples, both, strict=True):
        assert b["id"] == s["id"] == bs["id"]
        assert multiset(bs) == multiset(b) + multiset(s)


def test_the_settings_name_the_source_and_beams_alone_keep_todays(by_source):
    beams, samples, both = (by_source[s][0]["settings"] for s in ("beams", "samples", "both"))
    assert set(beams) == BEAM_SETTINGS_KEYS and set(beams["decoding"]) == BEAM_DECODING_KEYS
    sampling = {"num_samples": NUM_SAMPLES, "temperature": 1.0, "top_p": 0.95, "top_k": 0}
    assert samples["source"] == "samples" and samples["sampling"] == {**sampling, "seed": 0}
    assert samples["decoding"] == {"max_new_tokens": 6, "min_new_tokens": 2}
    assert both["source"] == "both" and both["sampling"] == samples["sampling"]
    assert both["decoding"] == beams["decoding"]
    for settings in (samples, both):  # nothing else differs from the beams-only file's
        rest = {k: v for k, v in settings.items() if k not in ("source", "sampling", "decoding")}
        assert rest == {k: v for k, v in beams.items() if k != "decoding"}


def test_a_beams_cache_is_reused_and_another_sources_is_refused_in_one_line(
    tmp_path, char_generator_dir, pm_run, by_source, monkeypatch, capsys
):
    meta, rows = by_source["beams"]
    only = "eval_ranking=false"  # the training file alone (no held-out file beside it)
    path = tmp_path / "candidates.jsonl"  # a complete beams-only cache, as written before
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    candidates_meta_path(path).write_text(json.dumps(meta), encoding="utf-8")

    def nothing_to_generate(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(search_module, "load_generator", nothing_to_generate)
    assert build_candidates(tiny(tmp_path, char_generator_dir, pm_run, only)) == path
    assert (
        build_candidates(tiny(tmp_path, char_generator_dir, pm_run, only, "source=beams")) == path
    )
    for source, differs in (("samples", "source: None -> 'samples'"), ("both", "sampling")):
        other = tiny(tmp_path, char_generator_dir, pm_run, only, f"source={source}")
        with pytest.raises(CandidateCacheError, match=differs):
            build_candidates(other)
    # sampling settings are part of the cache too
    both = tmp_path / "both"
    both.mkdir()
    for name in ("candidates.jsonl", "candidates.meta.json"):
        (both / name).write_bytes((tmp_path / name).read_bytes())
    meta_both = {**meta, "settings": by_source["both"][0]["settings"]}
    candidates_meta_path(both / "candidates.jsonl").write_text(json.dumps(meta_both))
    hotter = tiny(both, char_generator_dir, pm_run, only, "source=both", "sampling.temperature=0.7")
    with pytest.raises(CandidateCacheError, match="sampling.temperature: 1.0 -> 0.7"):
        build_candidates(hotter)
    # the command: one line on stderr, exit code 2
    config_file = tmp_path / "c.yaml"
    save_config(tiny(tmp_path, char_generator_dir, pm_run, only, "source=samples"), config_file)
    assert main(["generate", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and len(err.strip().splitlines()) == 1


def test_an_interrupted_samples_file_resumes_to_the_same_draws_and_is_rescored(
    tmp_path, char_generator_dir, pm_run, by_source
):
    config = tiny(tmp_path, char_generator_dir, None, "source=samples")
    path = build_candidates(config)
    _, full = read_candidates(path)
    for row in full:  # no scorer: a sample's mean token log-probability, best first
        scores = [c["score"] for c in row["candidates"]]
        assert all(s < 0 for s in scores) and scores == sorted(scores, reverse=True)
    # the same seeded draws as the PM-ranked file (only the scores differ)
    assert [multiset(r) for r in full] == [multiset(r) for r in by_source["samples"][1]]
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][:20])  # cut inside context 4
    meta_path = candidates_meta_path(path)
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "complete": False}))
    build_candidates(config)
    _, resumed = read_candidates(path)
    assert resumed == full
    # re-scored by the PM (the study's path): what the PM-ranked search wrote, scores aside
    ranked = tiny(
        tmp_path,
        char_generator_dir,
        pm_run,
        "source=samples",
        f"candidates={tmp_path / 'pm.jsonl'}",
    )
    meta, rescored = read_candidates(rescore_candidates(ranked, path))
    want_meta, want = by_source["samples"]
    assert meta["settings"] == want_meta["settings"]  # as if the PM had ranked the search
    for row, expected in zip(rescored, want, strict=True):
        assert [c["text"] for c in row["candidates"]] == [c["text"] for c in expected["candidates"]]
        assert [c["score"] for c in row["candidates"]] == pytest.approx(
            [c["score"] for c in expected["candidates"]], abs=1e-5
        )


def test_the_sampler_is_seeded_by_context_and_leaves_the_rng_alone(char_generator_dir):
    import torch

    from bayespref.calibration import SamplingConfig

    generator = load_generator(GeneratorConfig(name=char_generator_dir, max_context_tokens=40))
    sampling = SamplingConfig(num_samples=4)
    seed = context_seed(0, "synthetic-3")
    assert seed == context_seed(0, "synthetic-3") != context_seed(1, "synthetic-3")
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    texts, scores = sample_replies(generator, "hello", sampling, 6, 2, seed)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream untouched
    again = sample_replies(generator, "hello", sampling, 6, 2, seed)
    assert (texts, scores) == again and len(texts) == len(scores) == 4
    assert all(s < 0 for s in scores)


def test_calibration_on_both_sources_trains_a_step(tmp_path, char_generator_dir, pm_run):
    config = tiny(tmp_path, char_generator_dir, pm_run, "source=both")
    result = calibrate(config)
    assert result.steps == 1 and result.eval_gold_nll is not None
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["train_contexts"] == 8
    held_out, rows = read_candidates(summary["held_out_candidates"])
    assert held_out["settings"]["source"] == "both"  # the held-out sets: the same candidates
    assert all(r["num_generated"] == NUM_BEAMS + NUM_SAMPLES for r in rows)
    records = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    train = [r for r in records if r["split"] == "train"]
    assert len(train) == 1 and train[0]["rank"] >= 0


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("source=greedy", "source must be one of beams|samples|both, got 'greedy'"),
        ("sampling.top_p=0", "sampling.top_p must be in"),
        ("sampling.num_samples=0", "sampling.num_samples must be >= 1"),
        ("sampling.temperature=0", "sampling.temperature must be > 0"),
    ],
)
def test_source_and_sampling_mistakes_are_one_line_config_errors(tmp_path, override, match):
    with pytest.raises(ConfigError, match=match) as err:
        tiny(tmp_path, "unused", None, override)
    assert len(str(err.value).splitlines()) == 1


def test_the_sweep_varies_the_candidate_source_alone():
    from bayespref.studies.calibration_peer_configs import sweep_config
    from bayespref.studies.calibration_study_config import (
        calibration_config,
        load_calibration_study,
    )

    study = load_calibration_study(Path(__file__).parents[1] / "configs" / "calibration-sweep.yaml")
    task = study.tasks[0]
    base = calibration_config(study, task, "soft").candidate_search()
    rows = {row.variant: sweep_config(study, task, row) for row in study.rows if row.loss == "soft"}

    def changed(variant: str) -> dict:
        search = rows[variant].candidate_search()
        return {k: v for k, v in search.items() if base[k] != v}

    assert base["source"] == "beams" and base["num_beams"] == 4
    assert changed("k8") == {"num_beams": 8, "num_beam_groups": 8}
    # samples4: 4 samples against the study's 4 beams; both8: its 4 beams + 4 samples, vs k8
    assert changed("samples4") == {"source": "samples"}
    assert rows["samples4"].sampling.num_samples == 4
    assert changed("both8") == {"source": "both"}
    assert rows["both8"].decoding.num_beams + rows["both8"].sampling.num_samples == 8
    for variant in ("samples4", "both8"):  # nothing else about the row changes
        assert rows[variant].loss == rows["k8"].loss and rows[variant].optim == rows["k8"].optim
