"""The synthetic annotators label the generator's own candidates (issue 13, item 1):
``bayespref annotate-synthetic --config configs/annotate-synthetic.yaml``.

A preference model trained on the templated synthetic replies ranks a real generator's replies
out of its distribution. This writes the data to train one in distribution:

1. ``contexts.n`` synthetic contexts (:func:`~bayespref.data.synthetic.make_synthetic_contexts`,
   as calibration's ``data.source: synthetic``), split *by context* into held-out, validation
   and training contexts (seeded), so no context's candidates sit on both sides.
2. Candidates per context from the base generator (``source``): diverse beams through
   calibration's cached candidate search (:func:`bayespref.calibration.search.write_candidates`,
   no scorer: best beam score first) and/or ``sampling.num_samples`` ancestral samples
   (temperature, top-p; calibration's sampler,
   :func:`bayespref.calibration.sampling.sample_replies`, which calibration's ``source:
   samples | both`` uses too), in the order drawn, each with its mean token log-probability
   (kept in this cache's own format, unranked). Both
   caches live in ``<out>/candidates/``: a rerun reuses them, an interrupted one resumes after
   the last complete context, other settings are refused. Identical texts are kept once with a
   ``count``; blank texts are dropped (nothing to judge) and counted.
3. Each candidate gets ``p*`` from the oracle and ``Uniform{min..max}`` annotators of the
   default pool (the synthetic data set's, so ids ``W01``..``W20`` mean the same annotators),
   each drawing a label from ``r_a p* + (1 - r_a) b_a``
   (:func:`~bayespref.data.synthetic.annotators.simulate_annotations`).

Output, native JSONL (docs/data.md) with ``meta.json`` (the label space) beside it:
``train.jsonl``, ``valid.jsonl`` (when ``n_valid > 0``), ``heldout.jsonl``, one row per unique
candidate: ``{"id", "group" (the context id), "context", "response", "labels", "annotators",
"true_distribution", "source" (beam | sample), "rank" (position in its source's list),
"count", "generator_score"}``, each context's beams first, then its samples; and
``manifest.json`` (config, counts, commit).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .calibration.candidates import (
    candidates_meta_path,
    merge_duplicates,
    read_candidate_rows,
    read_candidates,
    write_json_atomic,
)
from .calibration.config import CalibrationConfig, ContextsConfig, SamplingConfig, ScorerConfig
from .calibration.contexts import load_contexts
from .calibration.sampling import context_seed, sample_replies
from .calibration.search import cached_meta, write_candidates
from .config import ConfigError, DecodingConfig, field_help, section_default, to_dict
from .data.synthetic import SYNTHETIC_LABEL_SPACE, SyntheticOracle, default_annotator_pool
from .data.synthetic.annotators import simulate_annotations
from .lm import Generator, GeneratorConfig, load_generator, resolve_generator
from .safety import RunLock
from .trainer_utils import seed_everything

logger = logging.getLogger(__name__)

ANNOTATED_FORMAT = "bayespref-annotated-synthetic/1"
SAMPLES_FORMAT = "bayespref-samples/1"
SOURCES = {"beams": ("beam",), "samples": ("sample",), "both": ("beam", "sample")}
SPLITS = ("train", "valid", "heldout")


@dataclasses.dataclass
class AnnotatedContextsConfig:
    """The synthetic contexts and their split (by context, never by candidate)."""

    n: int = field_help(400, "synthetic contexts (make_synthetic_contexts)")
    seed: int = field_help(1, "seed of the context texts (calibration's data.seed)")
    n_heldout: int | None = field_help(None, "held-out contexts (overrides heldout_fraction)")
    heldout_fraction: float = field_help(0.25, "share of the contexts held out (rank-eval)")
    n_valid: int | None = field_help(None, "validation contexts (overrides valid_fraction)")
    valid_fraction: float = field_help(
        0.1, "share of the contexts left after the hold-out kept for validation (PM selection)"
    )

    def __post_init__(self):
        if self.n < 1:
            raise ConfigError(f"contexts.n must be >= 1, got {self.n}")
        for key in ("heldout_fraction", "valid_fraction"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"contexts.{key} must be in [0, 1), got {getattr(self, key)}")
        for key in ("n_heldout", "n_valid"):
            if (getattr(self, key) or 0) < 0:
                raise ConfigError(f"contexts.{key} must be >= 0 or null, got {getattr(self, key)}")

    def split_sizes(self) -> tuple[int, int, int]:
        """(train, valid, heldout) numbers of contexts; a ConfigError when none is left to train."""
        heldout = self.n_heldout
        if heldout is None:
            heldout = int(round(self.heldout_fraction * self.n))
        valid = self.n_valid
        if valid is None:
            valid = int(round(self.valid_fraction * (self.n - heldout)))
        if heldout + valid >= self.n:
            raise ConfigError(
                f"contexts: {heldout} held-out + {valid} validation contexts leave none of "
                f"{self.n} to train on"
            )
        return self.n - heldout - valid, valid, heldout


@dataclasses.dataclass
class SimulatedAnnotatorsConfig:
    """How many annotators of the default pool label each candidate (as the synthetic data)."""

    min_annotators: int = field_help(1, "at least this many annotators per candidate")
    max_annotators: int = field_help(7, "at most this many (uniform in between)")

    def __post_init__(self):
        pool = len(default_annotator_pool())
        if not 1 <= self.min_annotators <= self.max_annotators <= pool:
            raise ConfigError(
                f"annotators: need 1 <= min_annotators <= max_annotators <= {pool} (the pool), "
                f"got {self.min_annotators}, {self.max_annotators}"
            )


@dataclasses.dataclass
class AnnotateSyntheticConfig:
    """``bayespref annotate-synthetic``: the generator's candidates, labelled by the synthetic
    annotators, written as native JSONL split by context."""

    out: str = field_help("runs/annotate-synthetic", "output folder (also holds the caches)")
    seed: int = field_help(0, "split, sampling and annotation seed")
    progress: bool = field_help(True, "show progress bars")
    source: str = field_help("both", "candidates: beams | samples | both")
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    contexts: AnnotatedContextsConfig = dataclasses.field(default_factory=AnnotatedContextsConfig)
    decoding: DecodingConfig = section_default(
        DecodingConfig,
        method="diverse-beam",
        num_beams=8,
        num_beam_groups=8,
        diversity_penalty=4.0,
        max_new_tokens=40,
        min_new_tokens=10,
        batch_size=8,
    )
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    annotators: SimulatedAnnotatorsConfig = dataclasses.field(
        default_factory=SimulatedAnnotatorsConfig
    )

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ConfigError(f"source must be one of {'|'.join(SOURCES)}, got {self.source!r}")
        if self.decoding.method != "diverse-beam":
            raise ConfigError(f"decoding.method must be diverse-beam, got {self.decoding.method!r}")
        self.contexts.split_sizes()  # refuse a split with nothing to train on now

    @property
    def out_dir(self) -> Path:
        return Path(self.out)


@dataclasses.dataclass
class AnnotationResult:
    out: Path
    files: dict[str, Path]  # split -> JSONL
    counts: dict  # the manifest's counts


def beam_search_config(config: AnnotateSyntheticConfig) -> CalibrationConfig:
    """The calibration config whose candidate cache holds the beams: the same generator,
    contexts (none held out there: the split is ours) and decoding, no scorer."""
    out = config.out_dir
    return CalibrationConfig(
        name=out.name or "annotate",
        output_dir=str(out.parent),
        seed=config.seed,
        progress=config.progress,
        generator=config.generator,
        data=ContextsConfig(
            source="synthetic", n=config.contexts.n, seed=config.contexts.seed, n_eval=0
        ),
        scorer=ScorerConfig(run=None),
        decoding=config.decoding,
        candidates=str(out / "candidates" / "beams.jsonl"),
    )


def annotate_synthetic(
    config: AnnotateSyntheticConfig, commit: str | None = None
) -> AnnotationResult:
    """Generate (or reuse), annotate, split and write; see the module docstring. ``commit``:
    the code version recorded in the manifest (the CLI passes the git commit)."""
    out = config.out_dir
    contexts = load_contexts(beam_search_config(config).data)
    sources = SOURCES[config.source]
    candidate_files: dict[str, Path] = {}
    with RunLock(out):  # one writer per output folder
        generator = None
        if "sample" in sources:
            candidate_files["sample"], generator = write_samples(config, contexts)
        if "beam" in sources:
            seed_everything(config.seed)
            candidate_files["beam"] = write_candidates(
                beam_search_config(config), contexts, generator
            )
        del generator
        candidates = {
            s: {r["id"]: r for r in read_candidates(p)[1]} for s, p in candidate_files.items()
        }
        rows, dropped = annotate(contexts, candidates, sources, config)
        files, counts = write_splits(config, contexts, rows)
        counts["blank_candidates_dropped"] = dropped
        counts["candidates_generated"] = {
            s: sum(r["num_generated"] for r in c.values()) for s, c in candidates.items()
        }
        manifest = {
            "format": ANNOTATED_FORMAT,
            "commit": commit,
            "config": to_dict(config),
            "label_space": SYNTHETIC_LABEL_SPACE.to_dict(),
            "files": {k: p.name for k, p in files.items()},
            "candidate_caches": {s: str(p) for s, p in candidate_files.items()},
            "counts": counts,
        }
        write_json_atomic(out / "manifest.json", manifest)
    logger.info("annotated %s -> %s", counts["rows"], out)
    return AnnotationResult(out, files, counts)


# --------------------------------------------------------------------------------------------
# Samples: a cache in the candidate-file format, contexts in order, candidates in drawn order


def samples_settings(config: AnnotateSyntheticConfig, contexts: list[dict]) -> dict:
    """What the samples depend on; a cached file is reused only when this matches."""
    path, gguf_file, eos = resolve_generator(config.generator)
    g = config.generator
    ids = "\n".join(r["id"] for r in contexts)
    return {
        "format": SAMPLES_FORMAT,
        "generator": {
            **{"name": g.name, "path": str(path), "gguf_file": gguf_file, "eos_token": eos},
            **{"chat_template": g.chat_template, "max_context_tokens": g.max_context_tokens},
            "dtype": g.dtype,
        },
        "sampling": dataclasses.asdict(config.sampling),
        "max_new_tokens": config.decoding.max_new_tokens,
        "min_new_tokens": config.decoding.min_new_tokens,
        "seed": config.seed,
        "contexts": {"n": len(contexts), "ids_sha256": hashlib.sha256(ids.encode()).hexdigest()},
    }


def write_samples(
    config: AnnotateSyntheticConfig, contexts: list[dict]
) -> tuple[Path, Generator | None]:
    """Sample candidates for every context into ``<out>/candidates/samples.jsonl`` (reused,
    resumed or refused as calibration's cache is). Returns the file and the generator if one
    was loaded (to search the beams with)."""
    path = config.out_dir / "candidates" / "samples.jsonl"
    settings = samples_settings(config, contexts)
    meta = cached_meta(path, settings)  # CandidateCacheError when made with other settings
    done: list[dict] = []
    if meta is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        write_json_atomic(candidates_meta_path(path), {"settings": settings, "complete": False})
    else:
        done, complete = read_candidate_rows(path, tolerate_partial_last=True)
        if [r["id"] for r in done] != [r["id"] for r in contexts[: len(done)]]:
            raise ConfigError(f"{path}: its contexts are not these contexts in order; delete it")
        with path.open("r+b") as fh:
            fh.truncate(complete)  # drop a line cut short by a crash
    todo = contexts[len(done) :]
    generator = None
    if todo:
        if done:
            logger.info("%s: resuming after %d of %d contexts", path, len(done), len(contexts))
        generator = load_generator(config.generator)
        bar = tqdm(
            total=len(contexts),
            initial=len(done),
            disable=not config.progress,
            desc="sample",
            unit="context",
        )
        with path.open("ab") as fh:
            for row in todo:
                seed = context_seed(config.seed, row["id"])
                d = config.decoding
                texts, scores = sample_replies(
                    generator,
                    row["context"],
                    config.sampling,
                    d.max_new_tokens,
                    d.min_new_tokens,
                    seed,
                )
                ranked = merge_duplicates(texts, scores)  # in the order drawn
                record = {
                    **{"id": row["id"], "context": row["context"], "gold": row["gold"]},
                    **{
                        "candidates": ranked,
                        "num_generated": len(texts),
                        "num_unique": len(ranked),
                    },
                }
                fh.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                fh.flush()
                bar.update(1)
        bar.close()
    rows, _ = read_candidate_rows(path, tolerate_partial_last=False)
    write_json_atomic(
        candidates_meta_path(path),
        {
            "settings": settings,
            "complete": True,
            "num_contexts": len(rows),
            "num_generated": sum(r["num_generated"] for r in rows),
            "num_unique": sum(r["num_unique"] for r in rows),
        },
    )
    return path, generator


# --------------------------------------------------------------------------------------------
# Annotation and the split files


def annotate(
    contexts: list[dict],
    candidates: dict[str, dict[str, dict]],
    sources: tuple[str, ...],
    config: AnnotateSyntheticConfig,
) -> tuple[list[dict], int]:
    """One native row per unique non-blank candidate, contexts in order, each context's
    sources in ``sources`` order; and the number of blank candidates dropped."""
    rows, dropped = [], 0
    for ctx in contexts:
        for source in sources:
            for rank, cand in enumerate(candidates[source][ctx["id"]]["candidates"]):
                if not cand["text"].strip():
                    dropped += 1
                    continue
                rows.append(
                    {
                        **{"id": f"{ctx['id']}:{source}{rank:02d}", "group": ctx["id"]},
                        **{"context": ctx["context"], "response": cand["text"]},
                        **{"source": source, "rank": rank, "count": cand["count"]},
                        "generator_score": cand["score"],
                    }
                )
    oracle = SyntheticOracle()
    true = oracle.distributions((r["context"], r["response"]) for r in rows)  # (N, C)
    pool = default_annotator_pool()
    rng = np.random.default_rng([config.seed, 0xA770])
    num_annotators, who, labels = simulate_annotations(
        true, pool, config.annotators.min_annotators, config.annotators.max_annotators, rng
    )  # (N,), (M,), (M,)
    bounds = np.concatenate([[0], np.cumsum(num_annotators)])
    names = SYNTHETIC_LABEL_SPACE.names
    for i, row in enumerate(rows):
        lo, hi = bounds[i], bounds[i + 1]
        row["labels"] = [names[c] for c in labels[lo:hi]]
        row["annotators"] = [pool[a].id for a in who[lo:hi]]
        row["true_distribution"] = true[i].tolist()
    return rows, dropped


def split_of_contexts(config: AnnotateSyntheticConfig, contexts: list[dict]) -> dict[str, str]:
    """Context id -> train | valid | heldout, a seeded random split by context."""
    n_train, n_valid, n_heldout = config.contexts.split_sizes()
    order = np.random.default_rng([config.seed, 0x5917]).permutation(len(contexts))
    split = ["heldout"] * n_heldout + ["valid"] * n_valid + ["train"] * n_train
    return {contexts[i]["id"]: split[k] for k, i in enumerate(order)}


def write_splits(
    config: AnnotateSyntheticConfig, contexts: list[dict], rows: list[dict]
) -> tuple[dict[str, Path], dict]:
    """Write ``<split>.jsonl`` (rows of that split's contexts, in order) and ``meta.json`` (the
    label space the native loader reads); returns the files and the counts per split."""
    out = config.out_dir
    split_of = split_of_contexts(config, contexts)
    files: dict[str, Path] = {}
    counts: dict[str, Any] = {"rows": len(rows), "contexts": len(contexts)}
    for split in SPLITS:
        chosen = [r for r in rows if split_of[r["group"]] == split]
        n_contexts = sum(v == split for v in split_of.values())
        counts[split] = {
            "contexts": n_contexts,
            "rows": len(chosen),
            "labels": sum(len(r["labels"]) for r in chosen),
        }
        if not n_contexts:
            (out / f"{split}.jsonl").unlink(missing_ok=True)  # a previous run's
            continue
        files[split] = out / f"{split}.jsonl"
        tmp = files[split].with_name(files[split].name + ".tmp")
        tmp.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chosen), encoding="utf-8"
        )
        tmp.replace(files[split])
    write_json_atomic(out / "meta.json", SYNTHETIC_LABEL_SPACE.to_dict())
    return files, counts
