"""RewardModel: a scalar reward ``r(context, response)`` on the encoders of PreferenceModel.

The same encoder, input (``context [SEP] response``, context cut from the left) and pooling
as :class:`~bayespref.model.PreferenceModel` (both are :class:`~bayespref.encoder_model.
EncoderModel`: the same loading, saving, pooling and text encoding), and the same MLP head with one output: the reward. A pair's outcomes (A wins, B wins, tie)
have Rao-Kupper probabilities from ``r_A - r_B`` and the learned ``theta = softplus(tie_logit)
>= 0`` (:mod:`bayespref.pairwise_losses`); without ties, Bradley-Terry over (A, B).

The model's label space names the outcomes it predicts (``A, B, tie`` or ``A, B``): that is
what it saves, and how a saved model knows whether it models ties. ``forward`` returns the
rewards (B, 1), which is what the exported transformers model (``num_labels=1``,
:mod:`bayespref.hf_export`) returns too; ``theta`` travels in the export's ``config.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .annotators import make_head
from .config import ModelConfig, PeftConfig
from .data.pairwise import OUTCOMES
from .data.schema import LabelSpace
from .encoder_model import MODEL_META, EncoderModel, find_model_dir, hidden_size, load_encoder
from .model import PreferenceModel
from .pairwise_losses import outcome_log_probs

REWARD_META = "reward_model.json"
INITIAL_TIE_LOGIT = 0.0  # theta = softplus(0) = log 2 at the start
SCORE_RULES = ("expected-utility", "worst-class")


def outcome_space(ties: bool) -> LabelSpace:
    """The outcomes a reward model predicts: (A, B, tie) or (A, B); utilities are A's gain."""
    names = OUTCOMES if ties else OUTCOMES[:2]
    return LabelSpace(names=tuple(names), utilities=(1.0, -1.0, 0.0)[: len(names)])


class RewardModel(EncoderModel):
    """Encoder + pooling + MLP head -> one reward per (context, response); ``forward``
    returns rewards (B, 1), :meth:`outcome_logits` the outcome logits of pairs. Saving,
    loading and the frozen-encoder mode (head and theta): :class:`~bayespref.encoder_model.
    EncoderModel`."""

    META_FILE = REWARD_META
    NOUN = "reward model"

    def __init__(
        self,
        encoder: nn.Module,
        tokenizer: Any,
        label_space: LabelSpace,
        config: ModelConfig,
        peft: PeftConfig | None = None,
    ):
        if tuple(label_space.names) not in (OUTCOMES, OUTCOMES[:2]):
            raise ValueError(
                f"a reward model's label space is the outcomes {list(OUTCOMES)} or "
                f"{list(OUTCOMES[:2])}, got {list(label_space.names)}"
            )
        if config.kind != "single":
            raise ValueError(f"a reward model has one head: model.kind=single, got {config.kind}")
        super().__init__(encoder, tokenizer, label_space, config, peft)
        self.head = make_head(config, hidden_size(encoder), 1, None)
        self.tie_logit: nn.Parameter | None = None
        if self.ties:
            self.tie_logit = nn.Parameter(torch.tensor(INITIAL_TIE_LOGIT))

    @property
    def ties(self) -> bool:
        return self.label_space.num_classes == 3

    @property
    def theta(self) -> Tensor | None:
        """The Rao-Kupper tie parameter ``softplus(tie_logit)`` (None without ties)."""
        return None if self.tie_logit is None else F.softplus(self.tie_logit.float())

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def build(cls, config: ModelConfig, ties: bool, peft: PeftConfig | None = None) -> RewardModel:
        """A fresh reward model on a pretrained encoder (:func:`~bayespref.encoder_model.load_encoder`)."""
        peft = peft if peft is not None else PeftConfig()
        encoder, tokenizer = load_encoder(config, peft)
        return cls(encoder, tokenizer, outcome_space(ties), config, peft)

    def trained_state(self) -> dict[str, Tensor]:
        """The head-only run's weights: the head and theta."""
        state = super().trained_state()
        if self.tie_logit is not None:
            state["tie_logit"] = self.tie_logit.detach().reshape(()).contiguous()
        return state

    def load_trained_state(self, tensors: dict[str, Tensor]) -> None:
        super().load_trained_state(tensors)
        self.load_export_state({"tie_logit": float(tensors["tie_logit"])} if self.ties else {})

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

    def outcome_logits(self, reward_a: Tensor, reward_b: Tensor) -> Tensor:
        """Outcome logits (B, K) = ``log P`` of (A, B[, tie]) from rewards (B,) or (B, 1)."""
        return outcome_log_probs(reward_a.reshape(-1) - reward_b.reshape(-1), self.theta)

    # -- text in, numbers out ---------------------------------------------------------------

    def score(
        self,
        contexts: Sequence[Sequence[str] | str | None],
        responses: Sequence[str],
        batch_size: int = 64,
        rule: str = "expected-utility",
    ) -> np.ndarray:
        """Rewards (N,) of (context, response) pairs, longest first in eval mode (an item's
        reward does not depend on its batch), in input order.

        ``rule`` is a preference model's ranking rule (:meth:`PreferenceModel.score
        <bayespref.model.PreferenceModel.score>`); a reward ranks by itself under either, so
        it is checked and otherwise unused: a reward run ranks wherever a preference run does
        (:func:`load_ranker`)."""
        if rule not in SCORE_RULES:
            raise ValueError(f"score rule must be expected-utility or worst-class, got {rule!r}")
        return self.forward_texts(contexts, responses, batch_size, lambda r: r[:, 0])

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


def ranker_model_dir(run: str | os.PathLike, checkpoint: str = "best") -> Path:
    """The model folder of a run that ranks responses: a reward-model run's (it holds
    ``reward_model.json``) or else a preference-model run's (``model.json``)."""
    try:
        folder = find_model_dir(Path(run), checkpoint, meta=REWARD_META)
    except FileNotFoundError:
        return find_model_dir(Path(run), checkpoint, meta=MODEL_META)
    if (folder / REWARD_META).is_file():
        return folder
    return find_model_dir(Path(run), checkpoint, meta=MODEL_META)


def load_ranker(
    run: str | os.PathLike, checkpoint: str = "best", trust_remote_code: bool = False
) -> PreferenceModel | RewardModel:
    """The model that ranks responses, from a reward-model run or a preference-model run.

    Both answer ``score(contexts, responses, rule=..., batch_size=...) -> (N,)``, higher =
    better: a preference model's score under ``rule`` (expected utility or minus the worst
    class's probability), a reward model's reward. Calibration's scorer and the TRL reward
    function load their model here, so either kind of run ranks candidates."""
    folder = ranker_model_dir(run, checkpoint)
    cls: type[PreferenceModel] | type[RewardModel]
    cls = RewardModel if (folder / REWARD_META).is_file() else PreferenceModel
    return cls.from_run(run, checkpoint=checkpoint, trust_remote_code=trust_remote_code)
