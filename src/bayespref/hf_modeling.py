"""Modeling code shipped inside an exported folder, so transformers loads it without bayespref.

:mod:`bayespref.hf_export` copies this file, unchanged, into the folder as
``modeling_bayespref.py`` and names its two classes in ``config.json``'s ``auto_map``; then

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)

builds :class:`BayesPrefForSequenceClassification`: the run's encoder (any ``AutoModel``, its
config stored under ``encoder_config``), the run's pooling and the run's MLP head, with the
same weights, so its logits equal ``PreferenceModel``'s. It imports torch and transformers
only (never bayespref: the folder must work where bayespref is not installed).

Why custom code and not a stock ``BertForSequenceClassification``: the stock heads pool the
first token through ``tanh(W h)``; ours averages the response tokens and applies
``Linear -> GELU -> Linear``, which no stock class computes. ``trust_remote_code=True`` runs
this file (read it first: it is short).

The response tokens, for ``pooling=response-mean``, are the tokens strictly between the last
two special tokens (``special_token_ids``: the tokenizer's cls/sep/bos/eos ids; a run of
adjacent ones counts as one) of each row: ``[CLS] context [SEP] response [SEP]`` and
``[CLS] response [SEP]`` (and RoBERTa's ``<s> context </s></s> response </s>``, or TRL's
``... response [SEP] [SEP]`` with its eos appended) give the response exactly as bayespref's
own encoding does. A caller may pass ``response_mask`` itself instead.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

POOLINGS = ("response-mean", "mean", "cls")


class BayesPrefConfig(PretrainedConfig):
    """The encoder's config (a dict with its ``model_type``), pooling, head width and the
    class utilities (``label_utilities[i]`` is the utility of ``id2label[i]``): the preference
    score is ``softmax(logits) @ label_utilities``; a reward model has one logit, the reward."""

    model_type = "bayespref"

    def __init__(
        self,
        encoder_config: dict[str, Any] | None = None,
        pooling: str = "response-mean",
        head_hidden: int | None = None,
        label_utilities: list[float] | None = None,
        special_token_ids: list[int] | None = None,
        head_dropout: float = 0.0,
        bayespref: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.encoder_config = dict(encoder_config or {})
        self.pooling = pooling
        self.head_hidden = head_hidden
        self.label_utilities = list(label_utilities or [])
        self.special_token_ids = list(special_token_ids or [])
        self.head_dropout = head_dropout
        self.bayespref = dict(bayespref or {})  # the run's model section and label space
        super().__init__(**kwargs)


def response_mask_from_ids(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, special_token_ids: list[int]
) -> torch.Tensor:
    """1 on the tokens strictly between the last two special tokens of each row (B, T); a
    run of adjacent special tokens counts as one (``response [SEP] [SEP]``, as TRL's
    ``RewardTrainer`` appends an eos after the tokenizer's own)."""
    length = input_ids.shape[1]
    real = attention_mask.bool()
    special = torch.isin(input_ids, torch.tensor(special_token_ids, device=input_ids.device))
    special = special & real
    after_special = torch.zeros_like(special)
    after_special[:, 1:] = special[:, :-1]
    run_start = special & ~after_special  # the first token of each run of special tokens
    positions = torch.arange(length, device=input_ids.device).expand_as(input_ids)
    none = torch.full_like(positions, -1)
    last = torch.where(run_start, positions, none).amax(dim=1, keepdim=True)  # (B, 1)
    before = special & (positions < last)
    previous = torch.where(before, positions, none).amax(dim=1, keepdim=True)  # (B, 1)
    return ((positions > previous) & (positions < last) & real).long()


class BayesPrefForSequenceClassification(PreTrainedModel):
    """Encoder + pooling + ``Dropout, Linear, GELU, Dropout, Linear`` head -> logits (B, C)."""

    config_class = BayesPrefConfig
    base_model_prefix = "encoder"
    supports_gradient_checkpointing = True  # the encoder's layers checkpoint (TRL turns it on)

    def __init__(self, config: BayesPrefConfig) -> None:
        super().__init__(config)
        if config.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {config.pooling!r}")
        encoder_config = dict(config.encoder_config)
        model_type = encoder_config.pop("model_type")
        self.encoder = AutoModel.from_config(AutoConfig.for_model(model_type, **encoder_config))
        if isinstance(getattr(self.encoder, "pooler", None), nn.Module):
            self.encoder.pooler = None  # bayespref pools the hidden states itself
        hidden = int(self.encoder.config.hidden_size)
        head_hidden = config.head_hidden or hidden
        self.head = nn.Sequential(
            nn.Dropout(config.head_dropout),
            nn.Linear(hidden, head_hidden),
            nn.GELU(),
            nn.Dropout(config.head_dropout),
            nn.Linear(head_hidden, int(config.num_labels or 1)),
        )
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def pool(
        self,
        hidden: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """(B, T, H) hidden states -> (B, H), as the run pooled them."""
        if self.config.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask
        if self.config.pooling == "response-mean":
            if response_mask is None:
                response_mask = response_mask_from_ids(
                    input_ids, attention_mask, self.config.special_token_ids
                )
            mask = response_mask * attention_mask
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        response_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """Logits (B, num_labels); with ``labels``, the cross-entropy (or, for one logit, the
        squared error) as ``loss``."""
        if input_ids is None:
            raise ValueError("forward needs input_ids")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state  # (B, T, H)
        logits = self.head(self.pool(hidden, input_ids, attention_mask, response_mask))
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def score(self, logits: torch.Tensor) -> torch.Tensor:
        """Preference score per row: expected utility ``softmax(logits) @ label_utilities``
        (C > 1), or the reward itself (one logit)."""
        if self.config.num_labels == 1:
            return logits[:, 0]
        utilities = torch.tensor(self.config.label_utilities, dtype=logits.dtype)
        return torch.softmax(logits, dim=-1) @ utilities.to(logits.device)
