"""Hand the preference model's judgement to TRL: DPO pairs and a GRPO/RLOO reward function.

``export_pairs`` reads a candidate file of the calibration pipeline with
:func:`bayespref.calibration.candidates.read_candidates` (one JSON object per context, the
settings in the sidecar ``<stem>.meta.json``)::

    {"id", "context" (string or list of turns), "gold" (string or null),
     "candidates": [{"text", "score", "count"}, ...],   # ranked best first
     "num_generated", "num_unique"}

and writes preference pairs in the format ``trl.DPOTrainer`` reads (trl 1.16: columns
``prompt``, ``chosen``, ``rejected``), one JSON object per line, loadable with
``datasets.load_dataset("json", data_files=...)``. Prompts follow the project's one prompt
format (:mod:`bayespref.lm`), the one the candidates were generated with:

- ``prompt_format="text"``: ``prompt`` is :func:`~bayespref.lm.plain_prompt` (each turn
  followed by a newline); ``chosen``/``rejected`` are plain strings (DPOTrainer appends eos).
- ``prompt_format="conversational"``: ``prompt`` is :func:`~bayespref.lm.chat_messages` (one
  message per turn, roles alternating back from the last turn, the user's) and
  ``chosen``/``rejected`` are ``[{"role": "assistant", "content": text}]``; DPOTrainer applies
  the tokenizer's chat template.

Each pair also carries ``id``, ``score_margin`` (chosen score - rejected score; null for a gold
chosen, which has no score), ``chosen_score`` and ``rejected_score``. DPOTrainer drops the extra
columns.

Strategies (candidates are ordered by score, highest first, whatever the file order):

- ``best-vs-worst`` (default): the highest against the lowest scored candidate;
- ``all-pairs``: every pair ``(i, j)`` with ``score_i - score_j >= min_margin``;
- ``gold-vs-worst``: the gold response against the lowest scored candidate.

Nothing is dropped silently: pairs with equal scores (no preference), pairs below
``min_margin``, contexts with fewer than two distinct candidates and, for gold-vs-worst,
contexts without a gold (or whose gold is the worst candidate) are counted in the returned
:class:`ExportReport` and logged.

``make_reward_function`` turns a preference-model run into a reward function with TRL's
signature ``reward(prompts, completions, **kwargs) -> list[float]``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .calibration.candidates import read_candidates
from .lm import chat_messages, plain_prompt
from .reward_model import RewardModel, load_ranker

logger = logging.getLogger(__name__)

STRATEGIES = ("best-vs-worst", "all-pairs", "gold-vs-worst")
PROMPT_FORMATS = ("text", "conversational")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def ranked_candidates(row: dict) -> list[dict]:
    """A candidate row's candidates by score, highest first (stable: ties keep file order)."""
    return sorted(row["candidates"], key=lambda c: -c["score"])


# --------------------------------------------------------------------------------------------
# Pairs


@dataclass
class ExportReport:
    """What ``export_pairs`` read, wrote and skipped (with reasons)."""

    contexts: int = 0
    pairs: int = 0
    skipped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        return f"{self.contexts} contexts -> {self.pairs} pairs; skipped: {reasons}"

    def to_dict(self) -> dict:
        return {"contexts": self.contexts, "pairs": self.pairs, "skipped": dict(self.skipped)}


def _pair(
    row: dict,
    chosen: str,
    rejected: str,
    chosen_score: float | None,
    rejected_score: float,
    prompt_format: str,
) -> dict:
    if prompt_format == "conversational":
        prompt: Any = chat_messages(row["context"])
        chosen_out: Any = [{"role": "assistant", "content": chosen}]
        rejected_out: Any = [{"role": "assistant", "content": rejected}]
    else:
        prompt, chosen_out, rejected_out = plain_prompt(row["context"]), chosen, rejected
    margin = None if chosen_score is None else chosen_score - rejected_score
    return {
        "id": row["id"],
        "prompt": prompt,
        "chosen": chosen_out,
        "rejected": rejected_out,
        "score_margin": margin,
        "chosen_score": chosen_score,
        "rejected_score": rejected_score,
    }


def make_pairs(
    row: dict,
    strategy: str = "best-vs-worst",
    min_margin: float = 0.0,
    prompt_format: str = "text",
    skipped: Counter | None = None,
) -> list[dict]:
    """The preference pairs of one candidate row; reasons for skipping are added to ``skipped``."""
    skipped = skipped if skipped is not None else Counter()
    ranked = ranked_candidates(row)
    gold = row.get("gold")
    if strategy == "gold-vs-worst":
        if gold is None or not gold.strip():
            skipped["no gold"] += 1
            return []
        if not ranked:
            skipped["no candidates"] += 1
            return []
        worst = ranked[-1]
        if worst["text"] == gold:
            skipped["gold is the worst candidate"] += 1
            return []
        return [_pair(row, gold, worst["text"], None, worst["score"], prompt_format)]

    if len(ranked) < 2:
        skipped["fewer than 2 distinct candidates"] += 1
        return []
    if strategy == "best-vs-worst":
        candidate_pairs = [(ranked[0], ranked[-1])]
    elif strategy == "all-pairs":
        candidate_pairs = [
            (ranked[i], ranked[j]) for i in range(len(ranked)) for j in range(i + 1, len(ranked))
        ]
    else:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    pairs = []
    for better, worse in candidate_pairs:
        margin = better["score"] - worse["score"]
        if better["text"] == worse["text"]:
            skipped["identical texts"] += 1
        elif margin <= 0:
            skipped["equal scores"] += 1
        elif margin < min_margin:
            skipped["margin below min_margin"] += 1
        else:
            pairs.append(
                _pair(
                    row, better["text"], worse["text"], better["score"], worse["score"],
                    prompt_format,
                )
            )  # fmt: skip
    return pairs


def export_pairs(
    candidates_path: str | Path,
    output_path: str | Path,
    strategy: str = "best-vs-worst",
    min_margin: float = 0.0,
    prompt_format: str = "text",
) -> ExportReport:
    """Write DPO pairs (JSONL, TRL's ``prompt``/``chosen``/``rejected``) from a candidate cache.

    Args:
        candidates_path: a candidate file (see the module docstring); its
            ``<stem>.meta.json`` must lie beside it.
        output_path: JSONL written, one pair per line.
        strategy: ``best-vs-worst`` | ``all-pairs`` | ``gold-vs-worst``.
        min_margin: candidate pairs whose score difference is below this are skipped (and
            counted); pairs with equal scores are always skipped. Not applied to gold pairs.
        prompt_format: ``text`` (plain strings) or ``conversational`` (lists of messages).

    Returns:
        An :class:`ExportReport` with the number of contexts, pairs and skips by reason.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"prompt_format must be text or conversational, got {prompt_format!r}")
    if not _is_number(min_margin) or not math.isfinite(min_margin) or min_margin < 0:
        raise ValueError(f"min_margin must be a finite number >= 0, got {min_margin!r}")
    meta, rows = read_candidates(candidates_path)
    logger.debug("candidate file settings: %s", meta.get("settings"))
    report = ExportReport(contexts=len(rows))
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(output_path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            for pair in make_pairs(row, strategy, min_margin, prompt_format, report.skipped):
                out.write(json.dumps(pair, ensure_ascii=False) + "\n")
                report.pairs += 1
    tmp.replace(output_path)  # a crash never leaves half a file under the final name
    log = logger.warning if report.pairs == 0 else logger.info
    log("export-pairs (%s): %s", strategy, report.summary())
    return report


# --------------------------------------------------------------------------------------------
# Reward function


def _message_text(content: Any) -> str:
    """A message's text; multimodal content lists keep their text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def prompt_context(prompt: str | list[dict]) -> list[str]:
    """A TRL prompt back as the preference model's context (a list of turns): the inverse of
    the prompt format (:mod:`bayespref.lm`), so the reward sees what the candidates' scorer saw.

    A text prompt (:func:`~bayespref.lm.plain_prompt`) is split at newlines; a conversational
    one gives its messages' texts. System messages are instructions to the generator, not
    dialogue: they are left out.
    """
    if isinstance(prompt, str):
        turns = prompt.split("\n")
    else:
        turns = [_message_text(m.get("content")) for m in prompt if m.get("role") != "system"]
    return [t for t in turns if t.strip()]


def completion_text(completion: str | list[dict]) -> str:
    """A TRL completion as text: the string, or its assistant messages joined."""
    if isinstance(completion, str):
        return completion
    texts = [
        _message_text(m.get("content"))
        for m in completion
        if m.get("role", "assistant") == "assistant"
    ]
    return "\n".join(texts)


def make_reward_function(
    run_dir: str | Path,
    rule: str = "expected-utility",
    batch_size: int = 64,
    checkpoint: str = "best",
    device: str | None = None,
) -> Callable[..., list[float]]:
    """A TRL reward function (GRPOTrainer / RLOOTrainer ``reward_funcs``) from a preference
    or reward model run (:func:`~bayespref.reward_model.load_ranker`).

    ``reward(prompts, completions, **kwargs)`` returns one float per completion: the preference
    score ``S = sum_l u_l q(l | x)`` of ``(prompt, completion)`` (``rule="expected-utility"``) or
    ``-q(worst class | x)`` (``rule="worst-class"``), or a reward model's reward (under either
    rule); higher is better. Prompts and
    completions may be strings or conversational lists of message dicts. Extra keyword
    arguments (``completion_ids``, dataset columns, ...) are ignored.
    """
    if rule not in ("expected-utility", "worst-class"):
        raise ValueError(f"rule must be expected-utility or worst-class, got {rule!r}")
    model = load_ranker(run_dir, checkpoint=checkpoint)
    if device is not None:
        model.to(device)
    model.eval()

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        contexts = [prompt_context(p) for p in prompts]
        responses = [completion_text(c) for c in completions]
        scores = model.score(contexts, responses, rule=rule, batch_size=batch_size)
        return [float(s) for s in scores]

    # TRL names each reward function's logged column after __name__
    kind = "reward_model" if isinstance(model, RewardModel) else "preference_model"
    reward.__name__ = kind + ("" if kind == "reward_model" else "_" + rule.replace("-", "_"))
    reward.model = model  # type: ignore[attr-defined]
    return reward
