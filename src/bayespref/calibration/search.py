"""Candidate search: diverse beams and/or samples (:mod:`.sampling`) from the base generator
(``source``), scored by a preference model, ranked and written to the candidate file
(:mod:`bayespref.calibration.candidates`).

The file is a cache: rerun with the same settings reuses it, an interrupted run resumes after
the last complete line, and a file made with other settings is refused. Under ``torchrun`` /
``accelerate launch`` the contexts are shared out across processes and the parts merged into
the file one process would write. :func:`rescore_candidates` ranks an existing file's texts
with another preference model, generating nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from ..beam_search import beam_config, diverse_beam_search
from ..config import ConfigError
from ..lm import Generator, left_pad, load_generator, resolve_generator
from ..reward_model import load_ranker, ranker_model_dir
from ..safety import RunLock
from ..trainer_utils import seed_everything
from .candidates import (
    CANDIDATES_FORMAT,
    CandidateCacheError,
    candidates_meta_path,
    dedupe_and_rank,
    held_out_candidates_path,
    read_candidate_rows,
    read_candidates,
    settings_diff,
    write_json_atomic,
)
from .config import CalibrationConfig, ScorerConfig
from .contexts import load_contexts, split_contexts
from .sampling import context_seed, sample_replies

logger = logging.getLogger(__name__)


def _candidate_settings(
    config: CalibrationConfig, train_rows: list[dict], held_out: bool = False
) -> dict:
    """What the candidates depend on; a cached file is reused only when this matches.
    ``held_out``: the settings of the held-out contexts' file (``train_rows`` are then those
    contexts; the training file's settings are unchanged by it)."""
    path, gguf_file, eos = resolve_generator(config.generator)
    g = config.generator
    decoding = dataclasses.asdict(config.decoding)
    # left out, as none changes the candidates: the batching, a seed (the search is
    # deterministic), the method (always diverse-beam: CalibrationConfig checks)
    for key in ("method", "batch_size", "seed"):
        decoding.pop(key)
    if config.source == "samples":  # no beams: only the lengths apply
        decoding = {k: decoding[k] for k in ("max_new_tokens", "min_new_tokens")}
    ids = "\n".join(r["id"] for r in train_rows)
    settings = {
        "format": CANDIDATES_FORMAT,
        "generator": {
            "name": g.name,
            "path": str(path),
            "gguf_file": gguf_file,
            "eos_token": eos,
            "chat_template": g.chat_template,
            "max_context_tokens": g.max_context_tokens,
            "dtype": g.dtype,
        },
        "scorer": {
            "run": config.scorer.run,
            "checkpoint": config.scorer.checkpoint,
            "rule": config.scorer.rule,
            "fingerprint": _scorer_fingerprint(config.scorer),
        },
        "decoding": decoding,
        "contexts": {
            **({"split": "held-out"} if held_out else {}),
            **dataclasses.asdict(config.data),
            "split_seed": config.seed,
            ("num_held_out" if held_out else "num_train"): len(train_rows),
            "ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
        },
    }
    if config.source != "beams":  # beams alone: the settings of every cache made before samples
        settings["source"] = config.source
        settings["sampling"] = {**dataclasses.asdict(config.sampling), "seed": config.seed}
    return settings


def _scorer_fingerprint(scorer: ScorerConfig) -> str | None:
    """A hash of the scorer's checkpoint (its manifest, else its weights): a retrained
    preference model in the same run folder invalidates the cache."""
    if scorer.run is None:
        return None
    folder = ranker_model_dir(scorer.run, scorer.checkpoint)
    for candidate in (folder / "manifest.json", folder.parent / "manifest.json"):
        if candidate.is_file():
            return hashlib.sha256(candidate.read_bytes()).hexdigest()
    weights = folder / "model.safetensors"
    return hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None


def build_candidates(config: CalibrationConfig) -> Path:
    """Generate, score, rank and cache the candidates of the training contexts, and (with
    ``eval_ranking``) of the held-out contexts beside them (:func:`held_out_candidates_path`).

    Returns the JSONL path (``config.candidates_path``). Reuses a complete file with the same
    settings, continues an interrupted one, and refuses one made with other settings. Under
    several processes only the training file is searched (calibrate adds the held-out one).
    """
    seed_everything(config.seed)
    train_rows, eval_rows = split_contexts(
        load_contexts(config.data, require_gold=config.needs_reference), config.data, config.seed
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _build_candidates_sharded(config, train_rows)
    with RunLock(config.run_dir):  # one writer: calibrate on the same run waits its turn
        path, generator = _write_candidate_file(
            config, config.candidates_path, _candidate_settings(config, train_rows), train_rows
        )
        if config.eval_ranking and eval_rows:
            write_held_out_candidates(config, eval_rows, generator)
        return path


def _build_candidates_sharded(config: CalibrationConfig, train_rows: list[dict]) -> Path:
    """:func:`build_candidates` under ``torchrun``/``accelerate launch``: each process searches
    a contiguous share of the contexts still to do into ``<file>.part<rank>`` (resumable on
    its own), then the main process appends the parts in rank order: the candidates one process
    writes, in the same order (scores agree up to the float rounding of other batches)."""
    state = PartialState(cpu=not torch.cuda.is_available())
    path = config.candidates_path
    lock = RunLock(config.run_dir) if state.is_main_process else nullcontext()
    with lock:
        status: list[int | str | None] = [None]
        if state.is_main_process:  # check the cache; `write_candidates` with nothing to do
            settings = _candidate_settings(config, train_rows)
            status = [_prepare_candidate_cache(path, settings, train_rows)]
        done_before = broadcast_object_list(status)[0]
        if isinstance(done_before, str):  # "complete"
            return path
        with state.split_between_processes(train_rows[done_before:]) as share:
            part = path.with_name(f"{path.name}.part{state.process_index}")
            done = (
                read_candidate_rows(part, tolerate_partial_last=True) if part.is_file() else ([], 0)
            )
            rows, complete = done
            if part.is_file() and complete < part.stat().st_size:
                with part.open("r+b") as fh:
                    fh.truncate(complete)
            if [r["id"] for r in rows] != [r["id"] for r in share[: len(rows)]]:
                part.unlink()  # another split of the work (other process count): redo the share
                rows = []
            todo = share[len(rows) :]
            if todo:
                generator = load_generator(
                    dataclasses.replace(config.generator, device=str(state.device))
                )
                scorer = _load_scorer(config, generator)
                _generate_into(part, todo, generator, scorer, config)
            elif not part.exists():
                part.write_bytes(b"")
        state.wait_for_everyone()
        if state.is_main_process:
            with path.open("ab") as fh:
                for rank in range(state.num_processes):
                    part = path.with_name(f"{path.name}.part{rank}")
                    fh.write(part.read_bytes())
            for rank in range(state.num_processes):
                path.with_name(f"{path.name}.part{rank}").unlink()
            write_candidates(config, train_rows, generator=None)  # verify + mark complete
        state.wait_for_everyone()
    return path


def cached_meta(path: Path, settings: dict) -> dict | None:
    """The sidecar of a cached candidate file built with ``settings`` (None: no cache yet);
    a cache built with other settings is a :class:`CandidateCacheError` naming the difference."""
    meta_path = candidates_meta_path(path)
    if not (meta_path.is_file() and path.is_file()):
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("settings") != settings:
        raise CandidateCacheError(
            f"{path} was built with other settings "
            f"({settings_diff(meta.get('settings'), settings)}); delete it and "
            f"{meta_path.name}, or set candidates to another file"
        )
    return meta


def _prepare_candidate_cache(path: Path, settings: dict, train_rows: list[dict]) -> int | str:
    """Check or start the cache file of ``train_rows`` (the contexts it holds, in order) made
    with ``settings``: the number of contexts already in it, or "complete"."""
    meta_path = candidates_meta_path(path)
    meta = cached_meta(path, settings)
    if meta is not None:
        done, complete = read_candidate_rows(path, tolerate_partial_last=True)
        if complete < path.stat().st_size:
            logger.warning("%s: dropping an incomplete last line (interrupted run)", path)
            with path.open("r+b") as fh:
                fh.truncate(complete)
        expected = [r["id"] for r in train_rows[: len(done)]]
        if [r["id"] for r in done] != expected or len(done) > len(train_rows):
            raise CandidateCacheError(
                f"{path}: its contexts are not this run's contexts in order; delete it"
            )
        if meta.get("complete") and len(done) == len(train_rows):
            logger.info("reusing %d cached candidate lists from %s", len(done), path)
            return "complete"
        logger.info("%s: resuming after %d of %d contexts", path, len(done), len(train_rows))
        return len(done)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    write_json_atomic(meta_path, {"settings": settings, "complete": False})
    return 0


def _load_scorer(config: CalibrationConfig, generator: Generator):
    """The ranking preference or reward model on the generator's device (None: rank by beam
    score)."""
    if config.scorer.run is None:
        return None
    scorer = load_ranker(config.scorer.run, checkpoint=config.scorer.checkpoint)
    return scorer.to(next(generator.model.parameters()).device)


def write_candidates(
    config: CalibrationConfig, train_rows: list[dict], generator: Generator | None
) -> Path:
    """Check, resume or write the candidate file of ``train_rows`` in this process, then mark
    it complete; the caller holds the run lock. ``generator``: the loaded base generator (None:
    loaded here when there is anything to generate)."""
    settings = _candidate_settings(config, train_rows)
    return _write_candidate_file(config, config.candidates_path, settings, train_rows, generator)[0]


def write_held_out_candidates(
    config: CalibrationConfig, eval_rows: list[dict], generator: Generator | None
) -> Path:
    """:func:`write_candidates` for the held-out contexts, into
    :func:`held_out_candidates_path` of the candidate file (the same search, scorer and
    cache rules): what the generator's ranking accuracy is measured on, never trained on."""
    settings = _candidate_settings(config, eval_rows, held_out=True)
    path = held_out_candidates_path(config.candidates_path)
    return _write_candidate_file(config, path, settings, eval_rows, generator)[0]


def _write_candidate_file(
    config: CalibrationConfig,
    path: Path,
    settings: dict,
    train_rows: list[dict],
    generator: Generator | None = None,
) -> tuple[Path, Generator | None]:
    """:func:`write_candidates` into ``path`` with ``settings``; also returns the generator
    (loaded here if there was anything to search, else the one passed in)."""
    done = _prepare_candidate_cache(path, settings, train_rows)
    if isinstance(done, str):  # "complete"
        return path, generator
    todo = train_rows[done:]
    if todo:
        generator = generator or load_generator(config.generator)
        scorer = _load_scorer(config, generator)
        _generate_into(path, todo, generator, scorer, config)
        del scorer
    rows, _ = read_candidate_rows(path, tolerate_partial_last=False)
    if [r["id"] for r in rows] != [r["id"] for r in train_rows]:
        raise CandidateCacheError(f"{path}: verification failed, contexts missing or out of order")
    meta = {
        "settings": settings,
        "complete": True,
        "num_contexts": len(rows),
        "num_generated": sum(r["num_generated"] for r in rows),
        "num_unique": sum(r["num_unique"] for r in rows),
    }
    write_json_atomic(candidates_meta_path(path), meta)
    logger.debug(  # the commands print this summary (INFO printed it twice)
        "candidates: %d contexts, %d unique of %d generated -> %s",
        len(rows),
        meta["num_unique"],
        meta["num_generated"],
        path,
    )
    return path, generator


def rescore_candidates(config: CalibrationConfig, source: str | os.PathLike) -> Path:
    """Re-rank the texts of an existing candidate file with ``config.scorer``.

    ``source`` must come from the same generator, decoding and contexts as ``config`` (its
    scorer may differ, or be none: see ``scorer.run``); nothing is generated. Each row's
    texts, duplicates included, are scored again and ranked by :func:`dedupe_and_rank` (equal
    scores keep the source's order). The result goes to ``config.candidates_path`` in the same
    format, with the settings ``config`` would have written, so :func:`calibrate` and
    ``export-pairs`` read it as if :func:`build_candidates` had made it. A complete file with
    these settings is reused. With ``eval_ranking``, the source's held-out file
    (:func:`held_out_candidates_path`), when there is a complete one, is re-scored the same way
    beside the result (else calibrate searches the held-out contexts itself).
    """
    scorer_run = config.scorer.run
    if scorer_run is None:
        raise ConfigError("rescore_candidates needs scorer.run: a preference or reward model run")
    train_rows, eval_rows = split_contexts(
        load_contexts(config.data, require_gold=config.needs_reference), config.data, config.seed
    )
    scorers: list = []  # loaded once, on first use

    def scorer():
        if not scorers:
            scorers.append(load_ranker(scorer_run, checkpoint=config.scorer.checkpoint))
        return scorers[0]

    settings = _candidate_settings(config, train_rows)
    path = _rescore_file(config, Path(source), config.candidates_path, settings, scorer)
    held_out_source = held_out_candidates_path(source)
    if config.eval_ranking and eval_rows and held_out_source.is_file():
        settings = _candidate_settings(config, eval_rows, held_out=True)
        destination = held_out_candidates_path(config.candidates_path)
        try:
            _rescore_file(config, held_out_source, destination, settings, scorer)
        except CandidateCacheError as err:  # not these contexts: calibrate searches them
            logger.info("held-out candidates not re-scored: %s", err)
    return path


def _rescore_file(
    config: CalibrationConfig, source: Path, path: Path, settings: dict, scorer
) -> Path:
    """:func:`rescore_candidates` of one file: ``source`` re-scored by ``scorer()`` into
    ``path`` with ``settings`` (reused when complete with them)."""
    meta = cached_meta(path, settings)
    if meta is not None:
        if meta.get("complete"):
            logger.info("reusing re-scored candidates %s", path)
            return path
    source_meta, source_rows = read_candidates(source)
    wanted = {k: v for k, v in settings.items() if k != "scorer"}
    have = {k: v for k, v in source_meta.get("settings", {}).items() if k != "scorer"}
    if have != wanted or not source_meta.get("complete"):
        raise CandidateCacheError(
            f"{source} is incomplete or holds other candidates ({settings_diff(have, wanted)})"
        )
    texts = [
        [c["text"] for c in row["candidates"] for _ in range(c["count"])] for row in source_rows
    ]
    contexts = [row["context"] for row, t in zip(source_rows, texts) for _ in t]
    flat = [text for t in texts for text in t]
    scores = scorer().score(
        contexts, flat, rule=config.scorer.rule, batch_size=config.scorer.batch_size
    )
    lines, start = [], 0
    for row, row_texts in zip(source_rows, texts):
        ranked = dedupe_and_rank(row_texts, scores[start : start + len(row_texts)])
        start += len(row_texts)
        record = {**row, "candidates": ranked, "num_unique": len(ranked)}
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(path)
    meta = {
        "settings": settings,
        "complete": True,
        "num_contexts": len(source_rows),
        "num_generated": sum(r["num_generated"] for r in source_rows),
        "num_unique": sum(r["num_unique"] for r in source_rows),
        "rescored_from": str(source),
    }
    write_json_atomic(candidates_meta_path(path), meta)
    logger.info("re-scored %d candidate lists from %s -> %s", len(source_rows), source, path)
    return path


def _generate_into(path: Path, rows: list[dict], generator: Generator, scorer, config) -> None:
    """Search and/or sample (``config.source``), score, rank and append the candidates of
    ``rows`` to ``path``, one batch of contexts at a time (each batch synced to disk: a crash
    loses at most the one being generated). A context's candidates are its beams, then its
    samples (seeded by its id: :func:`~.sampling.context_seed`), ranked together."""
    bar = tqdm(total=len(rows), disable=not config.progress, desc="generate", unit="context")
    with path.open("ab") as fh:
        for start in range(0, len(rows), config.decoding.batch_size):
            chunk = rows[start : start + config.decoding.batch_size]
            texts, own_scores = _beams_then_samples(chunk, generator, config)  # B lists each
            if scorer is None:  # the generator's own ranking: beam score, sample log-prob
                scores = own_scores
            else:
                contexts = [r["context"] for r, t in zip(chunk, texts) for _ in t]
                flat = scorer.score(
                    contexts,
                    [text for t in texts for text in t],
                    rule=config.scorer.rule,
                    batch_size=config.scorer.batch_size,
                )
                ends = np.cumsum([len(t) for t in texts]).tolist()
                scores = [flat[end - len(t) : end] for t, end in zip(texts, ends)]
            lines = []
            for row, row_texts, row_scores in zip(chunk, texts, scores, strict=True):
                ranked = dedupe_and_rank(row_texts, row_scores)
                record = {
                    "id": row["id"],
                    "context": row["context"],
                    "gold": row["gold"],
                    "candidates": ranked,
                    "num_generated": len(row_texts),
                    "num_unique": len(ranked),
                }
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            fh.write("".join(lines).encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())  # a crash loses at most the batch being generated
            bar.update(len(chunk))
    bar.close()


def _beams_then_samples(
    chunk: list[dict], generator: Generator, config: CalibrationConfig
) -> tuple[list[list[str]], list[list[float]]]:
    """Each context's candidate texts (its K beams, then its samples, as ``config.source``
    asks) and the generator's own score of each (beam score; a sample's mean token
    log-probability)."""
    texts: list[list[str]] = [[] for _ in chunk]
    scores: list[list[float]] = [[] for _ in chunk]
    if config.source in ("beams", "both"):
        beam = beam_config(config.decoding, generator.eos_token_id, generator.pad_token_id)
        device = next(generator.model.parameters()).device
        K = beam.resolved_num_return_sequences
        input_ids, attention_mask = left_pad(
            [generator.prompt_ids(r["context"]) for r in chunk], generator.pad_token_id
        )
        out = diverse_beam_search(
            generator.model, input_ids.to(device), attention_mask.to(device), beam
        )
        new = out.sequences[:, input_ids.shape[1] :].tolist()  # (B*K, T_new)
        beam_scores = out.sequence_scores.tolist()  # (B*K,)
        for b in range(len(chunk)):
            texts[b] += [generator.decode_new(tokens)[0] for tokens in new[b * K : (b + 1) * K]]
            scores[b] += beam_scores[b * K : (b + 1) * K]
    if config.source in ("samples", "both"):
        d = config.decoding
        for b, row in enumerate(chunk):
            seed = context_seed(config.seed, row["id"])
            sampled, log_probs = sample_replies(
                generator, row["context"], config.sampling, d.max_new_tokens, d.min_new_tokens, seed
            )
            texts[b] += sampled
            scores[b] += log_probs
    return texts, scores
