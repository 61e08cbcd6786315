"""PreferenceModel: any Hugging Face encoder, a pooling over tokens, an MLP head to C logits.

The input is ``context [SEP] response`` (context turns joined by the tokenizer's separator);
when the text is too long the context is cut from the left, so the most recent turns and the
response survive. The default pooling averages the hidden states of the response tokens only,
which is what the preference is about; ``mean`` averages all tokens and ``cls`` takes the first.

A run directory stores the encoder config, tokenizer, label space and weights (safetensors);
:meth:`PreferenceModel.from_run` rebuilds the model from those files and never unpickles
(:class:`~bayespref.encoder_model.EncoderModel`, shared with the reward model, which also holds
the text and encoder helpers this module re-exports).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .annotators import AnnotatorVocabulary, make_head
from .config import ModelConfig, PeftConfig
from .data.schema import LabelSpace
from .encoder_model import (
    MODEL_FILE,
    MODEL_META,
    PACKAGED_ENCODERS,
    EncoderModel,
    check_pairs,
    collate_encoded,
    drop_pooler,
    encode_pair,
    encode_pairs,
    find_model_dir,
    hidden_size,
    join_context,
    load_encoder,
    pool_hidden,
    position_limit,
    resolve_encoder_path,
)

__all__ = [  # the text and encoder helpers live in encoder_model; imported from here too
    "MODEL_FILE",
    "MODEL_META",
    "PACKAGED_ENCODERS",
    "PreferenceModel",
    "check_pairs",
    "collate_encoded",
    "drop_pooler",
    "encode_pair",
    "encode_pairs",
    "find_model_dir",
    "hidden_size",
    "join_context",
    "load_encoder",
    "pool_hidden",
    "position_limit",
    "resolve_encoder_path",
    "score_distributions",
]


class PreferenceModel(EncoderModel):
    """Encoder + pooling + MLP head; ``forward`` returns logits of shape (B, C) only.

    ``config.kind`` annotator-heads|annotator-embeddings: an annotator-aware head
    (:mod:`bayespref.annotators`; logits = ``log q`` of the crowd mixture). Saving, loading
    and the frozen-encoder mode: :class:`~bayespref.encoder_model.EncoderModel`.
    """

    META_FILE = MODEL_META

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer,
        label_space: LabelSpace,
        config: ModelConfig,
        peft: PeftConfig | None = None,
        vocabulary: AnnotatorVocabulary | None = None,
    ):
        super().__init__(encoder, tokenizer, label_space, config, peft)
        self.vocabulary = vocabulary if config.kind != "single" else None
        self.head = make_head(
            config, hidden_size(encoder), label_space.num_classes, self.vocabulary
        )

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        config: ModelConfig,
        label_space: LabelSpace,
        peft: PeftConfig | None = None,
        vocabulary: AnnotatorVocabulary | None = None,
    ) -> PreferenceModel:
        """A fresh model on a pretrained encoder (any Hugging Face encoder name or path), with
        the encoder wrapped in ``peft`` adapters when asked (:func:`load_encoder`: its errors)."""
        peft = peft if peft is not None else PeftConfig()
        encoder, tokenizer = load_encoder(config, peft)
        return cls(encoder, tokenizer, label_space, config, peft, vocabulary)

    @classmethod
    def from_parts(
        cls,
        encoder: nn.Module,
        tokenizer: Any,
        label_space: LabelSpace,
        config: ModelConfig,
        peft: PeftConfig,
        meta: dict[str, Any],
    ) -> PreferenceModel:
        """A loaded model, with its annotator vocabulary when the folder has one."""
        vocabulary = (
            AnnotatorVocabulary.from_dict(meta["annotators"]) if "annotators" in meta else None
        )
        return cls(encoder, tokenizer, label_space, config, peft, vocabulary)

    def extra_meta(self) -> dict[str, Any]:
        return {"annotators": self.vocabulary.to_dict()} if self.vocabulary else {}

    # -- forward --------------------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        response_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        features: Tensor | None = None,
        annotators: Tensor | None = None,
        slots: Tensor | None = None,
    ) -> Tensor:
        """``input_ids``, ``attention_mask``, ``response_mask``: (B, T). Returns logits (B, C).
        Annotator-aware heads take ``annotators`` or ``slots`` (see :mod:`bayespref.annotators`).

        ``attention_mask`` is 1 on real tokens and 0 on padding (the reference code built it as
        ``input_ids == pad``, the inverse; see tests). ``features`` (B, H), pooled encoder
        outputs computed earlier (:meth:`pooled_features`), skip the encoder.
        """
        if features is None:
            if input_ids is None or attention_mask is None:
                raise ValueError("forward needs input_ids and attention_mask, or features")
            features = self.pooled_features(
                input_ids, attention_mask, response_mask, token_type_ids
            )  # (B, H)
        if self.vocabulary is None:
            return self.head(features)  # (B, C)
        return self.head(features, annotators, slots)

    def predict_proba(
        self,
        contexts: Sequence[Sequence[str] | str | None],
        responses: Sequence[str],
        batch_size: int = 64,
    ) -> np.ndarray:
        """Class distributions q (N, C) for text pairs, batched, without gradients.

        The pairs are forwarded longest first, so each batch pads little; q comes back in
        input order (eval mode: an item's output does not depend on its batch). An empty or
        whitespace-only response (its pooled vector would be zeros: the same q for any such
        item, whatever its context), or a context that is not a string, a list of strings or
        None, raises :class:`DataError` (a ``ValueError``) naming its index.
        """
        return self.forward_texts(
            contexts,
            responses,
            batch_size,
            lambda logits: torch.softmax(logits.float(), dim=-1),
            (self.label_space.num_classes,),
        )

    def score(
        self,
        contexts: Sequence[Sequence[str] | str | None],
        responses: Sequence[str],
        rule: str = "expected-utility",
        batch_size: int = 64,
    ) -> np.ndarray:
        """Preference scores (N,), higher = better (METHOD section 4).

        ``expected-utility``: ``S = sum_l u_l q(l|x)``. ``worst-class``: ``-q(worst|x)``, the
        reference code's ranking by the probability of the least preferred class, negated so
        that higher is better under both rules.
        """
        q = self.predict_proba(contexts, responses, batch_size=batch_size)
        return score_distributions(q, self.label_space, rule)


def score_distributions(q: np.ndarray, label_space: LabelSpace, rule: str) -> np.ndarray:
    utilities = np.asarray(label_space.utilities, dtype=np.float64)
    if rule == "expected-utility":
        return q @ utilities
    if rule == "worst-class":
        return -q[:, int(np.argmin(utilities))]
    raise ValueError(f"score rule must be expected-utility or worst-class, got {rule!r}")
