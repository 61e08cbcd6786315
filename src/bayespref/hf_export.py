"""Models the ecosystem loads: a Hugging Face folder that transformers (and TRL) load directly.

:func:`write_pretrained` writes ``config.json`` (a :class:`~bayespref.hf_modeling.BayesPrefConfig`
with ``id2label``, the class utilities and an ``auto_map``), ``model.safetensors``, the
tokenizer and ``modeling_bayespref.py`` (a copy of :mod:`bayespref.hf_modeling`, which imports
torch and transformers only). Then, where bayespref is not installed,

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

gives the same logits as the bayespref model (checked here before the folder is written, on
probe pairs, to ``EXACT_TOL``). ``trust_remote_code`` is needed because no stock transformers
class computes our pooling and head (docs/export.md says why and what the file does).

:class:`PretrainedExport` is the mixin that gives ``PreferenceModel`` (and reward models) their
``save_pretrained`` / ``from_pretrained``; it works on the model's public attributes (encoder,
head, tokenizer, label space, config), so this module does not import ``model``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from . import hf_modeling
from .adapters import base_model
from .config import ConfigError, ModelConfig, PeftConfig
from .data.schema import LabelSpace
from .hf_modeling import BayesPrefConfig, BayesPrefForSequenceClassification

logger = logging.getLogger(__name__)

MODELING_FILE = "modeling_bayespref.py"
AUTO_MAP = {
    "AutoConfig": "modeling_bayespref.BayesPrefConfig",
    "AutoModelForSequenceClassification": "modeling_bayespref.BayesPrefForSequenceClassification",
}
EXACT_TOL = 1e-5  # largest |logit difference| allowed between the model and its export
# (context, response) pairs the export is checked on: with and without a context, several turns
PROBES: tuple[tuple[Any, str], ...] = (
    ("How do I reset my password?", "Open settings, choose Security, then Reset password."),
    (None, "A reply without any context."),
    (["Hi there.", "Can you help me with a recipe?"], "Sure: what would you like to cook?"),
    ("", "An empty context string."),
)


def special_token_ids(tokenizer: Any) -> list[int]:
    """The ids that delimit segments (cls, sep, bos, eos): the exported model finds the
    response between the last two of them (see :mod:`bayespref.hf_modeling`)."""
    names = ("cls_token_id", "sep_token_id", "bos_token_id", "eos_token_id")
    ids = {getattr(tokenizer, name, None) for name in names}
    return sorted(i for i in ids if isinstance(i, int))


def plain_encoder(model: Any) -> Any:
    """The model's encoder as a plain transformers model: LoRA adapters merged into a copy;
    other adapters (prefix tuning) cannot be written as plain weights and are refused."""
    method = model.peft.method
    if method == "none":
        return base_model(model.encoder)
    if method == "lora":
        return copy.deepcopy(model.encoder).merge_and_unload()
    raise ConfigError(
        f"peft.method={method} cannot be exported as a plain transformers model (its virtual "
        "tokens are not weights of the encoder); export models trained with lora or none"
    )


def to_hf(model: Any) -> BayesPrefForSequenceClassification:
    """The transformers model with ``model``'s weights (the encoder's adapters merged)."""
    kind = getattr(model.config, "kind", "single")
    if kind != "single":
        raise ConfigError(
            f"model.kind={kind} (an annotator-aware head) cannot be exported yet: "
            "export-model writes single-head models"
        )
    encoder = plain_encoder(model)
    encoder_config = encoder.config.to_dict()
    if encoder_config.get("model_type") not in CONFIG_MAPPING:
        raise ConfigError(
            f"encoder model_type {encoder_config.get('model_type')!r} is not built into "
            "transformers (it needs its own remote code): it cannot be exported"
        )
    label_space: LabelSpace = model.label_space
    num_labels = int(model.head[-1].out_features)
    names = list(label_space.names) if num_labels == label_space.num_classes else ["reward"]
    config = BayesPrefConfig(
        encoder_config=encoder_config,
        pooling=model.config.pooling,
        head_hidden=int(model.head[1].out_features),
        label_utilities=[float(u) for u in label_space.utilities] if num_labels > 1 else [],
        special_token_ids=special_token_ids(model.tokenizer),
        head_dropout=float(model.config.dropout),
        bayespref={
            "model": asdict(model.config),
            "label_space": label_space.to_dict(),
            "kind": type(model).__name__,
            "state": model.export_state(),
        },
        num_labels=num_labels,
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
        pad_token_id=model.tokenizer.pad_token_id,
    )
    config.auto_map = dict(AUTO_MAP)
    hf_model = BayesPrefForSequenceClassification(config)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


@torch.no_grad()
def largest_logit_gap(model: Any, hf_model: torch.nn.Module) -> float:
    """max |logits(model) - logits(export)| on :data:`PROBES`, the export fed only what a
    transformers user has (input ids, attention mask, token types: no response mask)."""
    was_training = model.training
    model.eval()
    try:
        batch = model.encode([c for c, _ in PROBES], [r for _, r in PROBES])
        expected = model(**batch)
        inputs = {k: v for k, v in batch.items() if k != "response_mask"}
        got = hf_model(**inputs).logits
    finally:
        model.train(was_training)
    return float((expected.float() - got.float()).abs().max())


def write_pretrained(model: Any, folder: str | os.PathLike) -> Path:
    """Write ``model`` as a folder ``AutoModelForSequenceClassification`` loads (module doc).

    The export is checked against ``model`` on probe pairs first; a gap above
    :data:`EXACT_TOL` (a tokenizer whose segments the exported model cannot find) raises
    ``ConfigError`` and writes nothing. The folder is written whole or not at all.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} exists and is not an empty folder: choose a new one")
    hf_model = to_hf(model)
    gap = largest_logit_gap(model, hf_model)
    if not gap <= EXACT_TOL:
        raise ConfigError(
            f"the exported model's logits differ from the model's by {gap:.2e} (> {EXACT_TOL}): "
            f"this tokenizer's special tokens {special_token_ids(model.tokenizer)} do not mark "
            "the response; export with model.pooling=mean or cls, or pass response_mask"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        hf_model.save_pretrained(staging)
        model.tokenizer.save_pretrained(staging)
        shutil.copyfile(hf_modeling.__file__, staging / MODELING_FILE)
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("exported %s (largest logit gap on the probes %.1e)", folder, gap)
    return folder


def read_pretrained(
    folder: str | os.PathLike, trust_remote_code: bool = False
) -> tuple[torch.nn.Module, Any, LabelSpace, ModelConfig, dict[str, Any]]:
    """The parts of a model written by :func:`write_pretrained`: encoder (no weights yet),
    tokenizer, label space, model section and the raw config (for the head's width)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not an exported bayespref model)")
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    if raw.get("model_type") != BayesPrefConfig.model_type or "bayespref" not in raw:
        raise ConfigError(f"{config_path} was not written by bayespref export-model")
    settings = raw["bayespref"]
    model_config = ModelConfig(**{**settings["model"], "trust_remote_code": trust_remote_code})
    encoder_config = dict(raw["encoder_config"])
    model_type = encoder_config.pop("model_type")
    encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **encoder_config))
    if isinstance(getattr(encoder, "pooler", None), torch.nn.Module):
        encoder.pooler = None
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    return encoder, tokenizer, LabelSpace.from_dict(settings["label_space"]), model_config, raw


class PretrainedExport:
    """``save_pretrained`` / ``from_pretrained`` for a model with ``encoder``, ``head``,
    ``tokenizer``, ``label_space``, ``config`` and ``peft`` attributes, built as
    ``cls(encoder, tokenizer, label_space, config)``. Scalar parameters outside the encoder
    and head (a reward model's tie parameter) travel in ``config.json`` (:meth:`export_state`)."""

    def export_state(self) -> dict[str, float]:
        """Scalar parameters, by attribute name, kept in ``config.json`` (none by default)."""
        return {}

    def load_export_state(self, state: dict[str, float]) -> None:
        """Set the scalar parameters :meth:`export_state` wrote."""
        for name, value in state.items():
            parameter = getattr(self, name)
            with torch.no_grad():
                parameter.fill_(float(value))

    def save_pretrained(self, folder: str | os.PathLike) -> Path:
        """Write a folder transformers loads without bayespref (:func:`write_pretrained`)."""
        return write_pretrained(self, folder)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, trust_remote_code: bool = False) -> Any:
        """Load a folder written by :meth:`save_pretrained` (safetensors and JSON only)."""
        encoder, tokenizer, label_space, model_config, raw = read_pretrained(
            folder, trust_remote_code
        )
        builder: Any = cls
        model = builder(encoder, tokenizer, label_space, model_config, PeftConfig())
        missing, unexpected = load_model(
            model, str(Path(folder) / "model.safetensors"), strict=False
        )
        state = raw["bayespref"].get("state", {})
        missing = [name for name in missing if name not in state]
        model.load_export_state(state)
        if missing or unexpected:
            raise ConfigError(
                f"{folder}/model.safetensors does not match its config.json: missing "
                f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        model.eval()
        return model
