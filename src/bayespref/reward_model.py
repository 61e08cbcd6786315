"""RewardModel: a scalar reward ``r(context, response)`` on the encoders of PreferenceModel.

The same encoder, input (``context [SEP] response``, context cut from the left) and pooling
as :class:`~bayespref.model.PreferenceModel` (its shared pieces: :func:`~bayespref.model.
load_encoder`, :func:`~bayespref.model.pool_hidden`, :func:`~bayespref.model.encode_pairs`),
and the same MLP head with one output: the reward. A pair's outcomes (A wins, B wins, tie)
have Rao-Kupper probabilities from ``r_A - r_B`` and the learned ``theta = softplus(tie_logit)
>= 0`` (:mod:`bayespref.pairwise_losses`); without ties, Bradley-Terry over (A, B).

The model's label space names the outcomes it predicts (``A, B, tie`` or ``A, B``): that is
what it saves, and how a saved model knows whether it models ties. ``forward`` returns the
rewards (B, 1), which is what the exported transformers model (``num_labels=1``,
:mod:`bayespref.hf_export`) returns too; ``theta`` travels in the export's ``config.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from .adapters import base_model, wrap_peft
from .annotators import make_head
from .checkpoint import MANIFEST, verify_manifest
from .config import ModelConfig, PeftConfig
from .data.pairwise import OUTCOMES
from .data.schema import LabelSpace
from .hf_export import PretrainedExport
from .model import (
    MODEL_FILE,
    check_pairs,
    collate_encoded,
    drop_pooler,
    encode_pair,
    encode_pairs,
    find_model_dir,
    hidden_size,
    load_encoder,
    pool_hidden,
)
from .pairwise_losses import outcome_log_probs

REWARD_META = "reward_model.json"
INITIAL_TIE_LOGIT = 0.0  # theta = softplus(0) = log 2 at the start


def outcome_space(ties: bool) -> LabelSpace:
    """The outcomes a reward model predicts: (A, B, tie) or (A, B); utilities are A's gain."""
    names = OUTCOMES if ties else OUTCOMES[:2]
    return LabelSpace(names=tuple(names), utilities=(1.0, -1.0, 0.0)[: len(names)])


class RewardModel(PretrainedExport, nn.Module):
    """Encoder + pooling + MLP head -> one reward per (context, response); ``forward``
    returns rewards (B, 1), :meth:`outcome_logits` the outcome logits of pairs."""

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        label_space: LabelSpace,
        config: ModelConfig,
        peft: PeftConfig | None = None,
    ):
        super().__init__()
        if tuple(label_space.names) not in (OUTCOMES, OUTCOMES[:2]):
            raise ValueError(
                f"a reward model's label space is the outcomes {list(OUTCOMES)} or "
                f"{list(OUTCOMES[:2])}, got {list(label_space.names)}"
            )
        if config.kind != "single":
            raise ValueError(f"a reward model has one head: model.kind=single, got {config.kind}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.label_space = label_space
        self.config = config
        self.peft = peft if peft is not None else PeftConfig()
        self.head = make_head(config, hidden_size(encoder), 1, None)
        self.tie_logit: nn.Parameter | None = None
        if self.ties:
            self.tie_logit = nn.Parameter(torch.tensor(INITIAL_TIE_LOGIT))
        if config.freeze_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()

    @property
    def ties(self) -> bool:
        return self.label_space.num_classes == 3

    @property
    def head_only(self) -> bool:
        """The encoder is frozen: only the head (and theta) train and are saved."""
        return bool(self.config.freeze_encoder)

    def train(self, mode: bool = True) -> RewardModel:
        super().train(mode)
        if self.head_only:  # a frozen encoder never runs with dropout
            self.encoder.eval()
        return self

    @property
    def theta(self) -> Tensor | None:
        """The Rao-Kupper tie parameter ``softplus(tie_logit)`` (None without ties)."""
        return None if self.tie_logit is None else F.softplus(self.tie_logit.float())

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def build(cls, config: ModelConfig, ties: bool, peft: PeftConfig | None = None) -> RewardModel:
        """A fresh reward model on a pretrained encoder (:func:`~bayespref.model.load_encoder`)."""
        peft = peft if peft is not None else PeftConfig()
        encoder, tokenizer = load_encoder(config, peft)
        return cls(encoder, tokenizer, outcome_space(ties), config, peft)

    @classmethod
    def from_run(
        cls, path: str | os.PathLike, checkpoint: str = "best", trust_remote_code: bool = False
    ) -> RewardModel:
        """Load a trained reward model from a run directory (or a model folder); as
        ``PreferenceModel.from_run``: checksums verified, remote code only when passed here."""
        folder = find_model_dir(Path(path), checkpoint, meta=REWARD_META)
        for candidate in (folder, folder.parent):
            if (candidate / MANIFEST).is_file():
                verify_manifest(candidate)
                break
        return cls.load(folder, trust_remote_code=trust_remote_code)

    @classmethod
    def load(cls, folder: str | os.PathLike, trust_remote_code: bool = False) -> RewardModel:
        """Load a folder written by :meth:`save` (safetensors and JSON only)."""
        folder = Path(folder)
        meta = json.loads((folder / REWARD_META).read_text(encoding="utf-8"))
        config = ModelConfig(**{**meta["model"], "trust_remote_code": trust_remote_code})
        peft = PeftConfig(**meta["peft"])
        if meta["weights"] == "head":  # the encoder is the pretrained one
            encoder, _ = load_encoder(config, PeftConfig())
        else:
            encoder_config = AutoConfig.from_pretrained(
                folder / "encoder", trust_remote_code=trust_remote_code
            )
            encoder = AutoModel.from_config(encoder_config, trust_remote_code=trust_remote_code)
            encoder = wrap_peft(drop_pooler(encoder), peft, "feature-extraction")
        tokenizer = AutoTokenizer.from_pretrained(
            folder / "tokenizer", trust_remote_code=trust_remote_code
        )
        label_space = LabelSpace.from_dict(meta["label_space"])
        model = cls(encoder, tokenizer, label_space, config, peft)
        model.load_weights(folder / MODEL_FILE)
        model.eval()
        return model

    def trained_state(self) -> dict[str, Tensor]:
        """The head-only run's weights: the head and theta."""
        state = {f"head.{k}": v.contiguous() for k, v in self.head.state_dict().items()}
        if self.tie_logit is not None:
            state["tie_logit"] = self.tie_logit.detach().reshape(()).contiguous()
        return state

    def save(self, folder: str | os.PathLike) -> None:
        """Weights (safetensors), encoder config, tokenizer and ``reward_model.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.head_only:
            save_file(self.trained_state(), str(folder / MODEL_FILE))
        else:
            save_model(self, str(folder / MODEL_FILE))
        base_model(self.encoder).config.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        meta = {
            "model": asdict(self.config),
            "peft": asdict(self.peft),
            "label_space": self.label_space.to_dict(),
            "weights": "head" if self.head_only else "all",
        }
        (folder / REWARD_META).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a safetensors file written by :meth:`save`; mismatches are errors."""
        if self.head_only:
            tensors = load_file(str(path))
            expected = set(self.trained_state())
            missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            if not missing and not unexpected:
                head = {k[len("head.") :]: v for k, v in tensors.items() if k.startswith("head.")}
                self.head.load_state_dict(head)
                self.load_export_state(
                    {"tie_logit": float(tensors["tie_logit"])} if self.ties else {}
                )
                return
        else:
            missing, unexpected = load_model(self, str(path), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} does not match the reward model: missing {sorted(missing)[:5]}, "
                f"unexpected {sorted(unexpected)[:5]}"
            )

    def export_state(self) -> dict[str, float]:
        """``tie_logit`` goes into the export's ``config.json`` (the transformers model has
        the reward only)."""
        return {} if self.tie_logit is None else {"tie_logit": self.tie_logit.item()}

    # -- forward ----------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        response_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        features: Tensor | None = None,
    ) -> Tensor:
        """Rewards (B, 1) of encoded (context, response) rows, or of pooled ``features``
        (B, H) computed earlier (a frozen encoder)."""
        if features is None:
            if input_ids is None or attention_mask is None:
                raise ValueError("forward needs input_ids and attention_mask, or features")
            features = self.pooled_features(
                input_ids, attention_mask, response_mask, token_type_ids
            )
        return self.head(features)  # (B, 1)

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
        return pool_hidden(hidden, attention_mask, response_mask, self.config.pooling)

    def outcome_logits(self, reward_a: Tensor, reward_b: Tensor) -> Tensor:
        """Outcome logits (B, K) = ``log P`` of (A, B[, tie]) from rewards (B,) or (B, 1)."""
        return outcome_log_probs(reward_a.reshape(-1) - reward_b.reshape(-1), self.theta)

    # -- text in, numbers out ---------------------------------------------------------------

    def encode(
        self, contexts: Sequence[Sequence[str] | str | None], responses: Sequence[str]
    ) -> dict[str, Tensor]:
        """Tokenise (context, response) pairs into a padded batch with a response mask."""
        return encode_pairs(self.tokenizer, contexts, responses, self.config.max_length)

    @torch.no_grad()
    def score(
        self,
        contexts: Sequence[Sequence[str] | str | None],
        responses: Sequence[str],
        batch_size: int = 64,
    ) -> np.ndarray:
        """Rewards (N,) of (context, response) pairs, longest first in eval mode (an item's
        reward does not depend on its batch), in input order."""
        if len(contexts) != len(responses):
            raise ValueError(f"{len(contexts)} contexts for {len(responses)} responses")
        check_pairs(contexts, responses)
        items = [
            encode_pair(self.tokenizer, c, r, self.config.max_length)
            for c, r in zip(contexts, responses)
        ]
        rewards = np.zeros(len(items))
        order = np.argsort([-len(it["input_ids"]) for it in items], kind="stable")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            for start in range(0, len(items), batch_size):
                rows = order[start : start + batch_size]
                batch = collate_encoded([items[i] for i in rows], self.tokenizer.pad_token_id or 0)
                batch = {k: v.to(device) for k, v in batch.items()}
                rewards[rows] = self(**batch)[:, 0].float().cpu().numpy()
        finally:
            self.train(was_training)
        return rewards

    @torch.no_grad()
    def predict_pairs(
        self,
        contexts: Sequence[Sequence[str] | str | None],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        batch_size: int = 64,
    ) -> np.ndarray:
        """Outcome probabilities (N, K) of pairs: (A, B, tie) or (A, B)."""
        reward_a = torch.as_tensor(self.score(contexts, responses_a, batch_size))
        reward_b = torch.as_tensor(self.score(contexts, responses_b, batch_size))
        return self.outcome_logits(reward_a, reward_b).exp().double().cpu().numpy()
