"""Score a JSONL file with a trained model, in one of two input formats.

Single responses, ``{"id"?, "context"?, "response"}``: a preference model's class
distribution and score (:func:`score_file`). Pairs, A vs B (any :mod:`bayespref.data.pairwise`
schema; votes optional): a reward model's outcome probabilities and both rewards
(:func:`score_pairs_file`). :func:`input_format` tells the two apart by the first row's keys."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from .config import ConfigError
from .data import JSON_ERRORS, json_problem
from .data.native import parse_context
from .data.pairwise import OUTCOMES, PARSERS, guess_format, jsonl_objects
from .data.schema import DataError
from .model import PreferenceModel, score_distributions
from .reward_model import RewardModel, load_ranker

logger = logging.getLogger(__name__)

OUTPUT_FIELDS = ("probs", "score", "expected_utility", "worst_class_prob", "annotator_probs")
"""The fields :func:`score_file` adds to each input row."""
PAIR_OUTPUT_FIELDS = ("probs", "reward_a", "reward_b")
"""The fields :func:`score_pairs_file` adds to each input pair."""
INPUT_FORMATS = ("auto", "responses", "pairs")


def input_format(path: str | Path) -> str:
    """``responses`` when the file's first row has a ``response`` key, else ``pairs``."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", str(path))
    with path.open("rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    first = json.loads(raw)
                except (*JSON_ERRORS, UnicodeDecodeError):
                    return "responses"  # read_pairs names the file and line
                is_row = isinstance(first, dict)
                return "responses" if not is_row or "response" in first else "pairs"
    return "responses"


def read_pair_rows(path: str | Path) -> list[tuple[dict, list[str], str, str]]:
    """``(row, context, response A, response B)`` per line of a pairwise file in any
    :data:`~bayespref.data.pairwise.FORMATS` schema, guessed per row; TRL's A is ``chosen``.
    Votes are optional (a pair to score need not be labelled); errors name file:line."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except FileNotFoundError as err:
        raise DataError("file not found", source) from err
    except UnicodeDecodeError as err:
        raise DataError(f"not UTF-8 ({err.reason} at byte {err.start})", source) from err
    rows = []
    for record, line_no in jsonl_objects(text, source):
        written = [field for field in PAIR_OUTPUT_FIELDS if field in record]
        if written:
            raise DataError(
                f"the input already has {written}, the fields score writes: rename them",
                source,
                line_no,
            )

        def fail(problem: str, line: int = line_no) -> DataError:
            return DataError(problem, source, line)

        kind = guess_format(record)
        unlabelled = kind == "native" and "votes" not in record and "annotations" not in record
        labelled = {**record, "votes": {"A": 0, "B": 0, "tie": 0}} if unlabelled else record
        parsed = PARSERS[kind](labelled, fail, f"{Path(path).name}:{line_no}")
        row = dict(record)
        row.setdefault("id", parsed.id)
        rows.append((row, parsed.context, parsed.response_a, parsed.response_b))
    if not rows:
        raise DataError("no pairs in the file (it is empty)", source)
    return rows


def read_pairs(path: str | Path) -> list[dict]:
    """Read ``{"id"?, "context"?, "response"}`` objects, one per line; errors name file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", str(path))
    pairs = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"not UTF-8 ({err.reason} at byte {err.start})", str(path), line_no
                ) from err
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except JSON_ERRORS as err:
                raise DataError(f"invalid JSON: {json_problem(err)}", str(path), line_no) from err
            if not isinstance(obj, dict):
                raise DataError("each line must be a JSON object", str(path), line_no)
            response = obj.get("response")
            if not isinstance(response, str):
                raise DataError("missing or non-string 'response'", str(path), line_no)
            written = [field for field in OUTPUT_FIELDS if field in obj]
            if written:
                raise DataError(
                    f"the input already has {written}, the fields score writes: rename them "
                    f"(or score the original file) so that nothing of yours is overwritten",
                    str(path),
                    line_no,
                )

            def fail(problem: str, line: int = line_no) -> DataError:
                return DataError(problem, str(path), line)

            context = parse_context(obj.get("context"), fail)
            obj.setdefault("id", f"{path.name}:{line_no}")
            obj["context"] = context
            pairs.append(obj)
    return pairs


def check_output_path(output_path: Path, input_path: Path) -> None:
    """Refuse an output that would destroy something, before any work is done.

    The output is written to ``<output>.tmp`` and then renamed over ``<output>``: an output that
    is the input file would replace the pairs being scored, and a directory cannot be replaced
    by a file (the rename fails after the whole scoring pass).
    """
    if output_path.is_dir():
        raise ConfigError(
            f"output {output_path} is a directory; give a file path such as "
            f"{output_path / 'scored.jsonl'}"
        )
    same = output_path.resolve() == input_path.resolve()
    if not same and output_path.exists() and input_path.exists():
        same = os.path.samefile(output_path, input_path)  # a hard link, a bind mount
    if same:
        raise ConfigError(
            f"output {output_path} is the input file; writing the scores there would replace "
            f"the pairs: choose another output path (nothing was written)"
        )


@torch.no_grad()
def annotator_probabilities(
    model: PreferenceModel, contexts: list, responses: list[str], batch_size: int = 64
) -> np.ndarray:
    """Every annotator slot's ``q_a(l | x)`` (N, S, C) of an annotator-aware model, in the
    order of ``model.vocabulary`` (slot 0: the pooled head of rare and unseen annotators).
    A model without annotator slots is a :class:`ConfigError`."""
    vocabulary = model.vocabulary
    if vocabulary is None:
        raise ConfigError(
            "per-annotator predictions need a run trained with model.kind=annotator-heads or "
            "annotator-embeddings"
        )
    model.predict_proba(contexts[:1], responses[:1])  # the same checks of the pairs
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(responses), batch_size):
            batch = model.encode(
                contexts[start : start + batch_size], responses[start : start + batch_size]
            )
            slots = torch.arange(vocabulary.num_slots).expand(len(batch["input_ids"]), -1)
            inputs = {k: v.to(device) for k, v in batch.items()}
            out.append(model(**inputs, slots=slots.to(device)).float().exp().cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, vocabulary.num_slots, model.label_space.num_classes))
    return np.concatenate(out)


def score_file(
    run: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    rule: str = "expected-utility",
    batch_size: int = 64,
    checkpoint: str = "best",
    per_annotator: bool = False,
) -> int:
    """Write each input pair with its class distribution and preference score; returns N.

    Output fields: the input fields, ``probs`` {class: q}, ``score`` (higher = preferred, under
    ``rule``), ``expected_utility`` and ``worst_class_prob``. An annotator-aware run's ``probs``
    is the crowd distribution of unknown annotators (the population mixture); with
    ``per_annotator=True`` each row also gets ``annotator_probs`` {annotator id: {class: q_a}}
    (``<pooled>``: rare and unseen annotators), computed by each process for every pair.

    Under ``torchrun``/``accelerate launch`` each process scores a contiguous share of the pairs
    and the main process writes them all, in input order: the same file as one process writes.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    check_output_path(output_path, input_path)
    state = PartialState(cpu=not torch.cuda.is_available())
    model = PreferenceModel.from_run(run, checkpoint=checkpoint).to(state.device)
    pairs = read_pairs(input_path)
    per_slot = None
    if per_annotator:
        contexts, responses = [p["context"] for p in pairs], [p["response"] for p in pairs]
        per_slot = annotator_probabilities(model, contexts, responses, batch_size)  # (N, S, C)
    space = model.label_space
    with state.split_between_processes(list(range(len(pairs)))) as share:
        with torch.inference_mode():
            q_share = model.predict_proba(
                [pairs[i]["context"] for i in share],
                [pairs[i]["response"] for i in share],
                batch_size=batch_size,
            )
    if state.num_processes > 1:
        shares = gather_object([(list(share), q_share)])  # one (indices, q) per process
        state.wait_for_everyone()
        if not state.is_main_process:
            return len(pairs)
        q = np.zeros((len(pairs), space.num_classes))
        for indices, rows in shares:
            q[indices] = rows
    else:
        q = q_share
    scores = score_distributions(q, space, rule)
    utility = score_distributions(q, space, "expected-utility")
    worst = -score_distributions(q, space, "worst-class")
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for i, pair in enumerate(pairs):
                row = dict(pair)
                row["probs"] = {name: float(q[i, l]) for l, name in enumerate(space.names)}
                row["score"] = float(scores[i])
                row["expected_utility"] = float(utility[i])
                row["worst_class_prob"] = float(worst[i])
                if per_slot is not None and model.vocabulary is not None:
                    row["annotator_probs"] = {
                        model.vocabulary.slot_name(a): dict(zip(space.names, map(float, qa)))
                        for a, qa in enumerate(per_slot[i])
                    }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(output_path)
    except BaseException:  # a full disk, an interrupt: no half-written file is left behind
        tmp.unlink(missing_ok=True)
        raise
    logger.info("scored %d pairs from %s into %s", len(pairs), input_path, output_path)
    return len(pairs)


def score_pairs_file(
    run: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    batch_size: int = 64,
    checkpoint: str = "best",
) -> int:
    """Write each input pair with a reward model's ``probs`` {A, B[, tie]: P} (Rao-Kupper, or
    Bradley-Terry without ties) and ``reward_a``, ``reward_b``; returns N. A preference-model
    run scores single responses only (:func:`score_file`): a ConfigError. Every process
    scores all pairs; the main process writes them."""
    input_path, output_path = Path(input_path), Path(output_path)
    check_output_path(output_path, input_path)
    state = PartialState(cpu=not torch.cuda.is_available())
    model = load_ranker(run, checkpoint=checkpoint)
    if not isinstance(model, RewardModel):
        raise ConfigError(
            f"{run} is a preference-model run: pairs (A vs B) need a reward-model run "
            f"(bayespref train-pairwise); score single responses ({{'response': ...}}) instead"
        )
    model.to(state.device)
    rows = read_pair_rows(input_path)
    contexts = [context for _, context, _, _ in rows]
    with torch.inference_mode():
        reward_a = model.score(contexts, [a for _, _, a, _ in rows], batch_size=batch_size)
        reward_b = model.score(contexts, [b for _, _, _, b in rows], batch_size=batch_size)
        probs = model.outcome_logits(torch.as_tensor(reward_a), torch.as_tensor(reward_b))
    probs_np = probs.exp().double().cpu().numpy()
    if not state.is_main_process:
        return len(rows)
    names = OUTCOMES[: probs_np.shape[1]]
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for i, (row, _, _, _) in enumerate(rows):
                out = dict(row)
                out["probs"] = {name: float(probs_np[i, k]) for k, name in enumerate(names)}
                out["reward_a"], out["reward_b"] = float(reward_a[i]), float(reward_b[i])
                fh.write(json.dumps(out, ensure_ascii=False) + "\n")
        tmp.replace(output_path)
    except BaseException:  # a full disk, an interrupt: no half-written file is left behind
        tmp.unlink(missing_ok=True)
        raise
    logger.info("scored %d pairs (A vs B) from %s into %s", len(rows), input_path, output_path)
    return len(rows)
