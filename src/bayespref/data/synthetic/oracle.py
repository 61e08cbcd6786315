"""The known generating distribution of the synthetic data: :class:`SyntheticOracle`.

``p*(x) = softmax((W f(x) + b) / temperature)`` with ``W`` of shape (C, F) and ``f`` the 11
text features of :func:`~bayespref.data.synthetic.features.text_features` (its module says
what each counts and where the default weights push it). Classes (:data:`SYNTHETIC_LABEL_SPACE`): ``harmful`` (utility -1; alias
``unhelpful``), ``neutral`` (0), ``supportive`` (1).

The default weights (:data:`DEFAULT_WEIGHTS`, :data:`DEFAULT_BIAS`) make a plain empathetic,
engaged reply with an open question near-certainly ``supportive``, a dismissive one
near-certainly ``harmful``, and mixed replies (warm but pushy advice, neutral information,
off-topic kindness) genuinely split: ``p*`` is spread out for many items.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..schema import LabelSpace
from .features import FEATURE_NAMES, text_features

SYNTHETIC_LABEL_SPACE = LabelSpace(
    names=("harmful", "neutral", "supportive"),
    utilities=(-1.0, 0.0, 1.0),
    aliases=(("unhelpful", "harmful"),),
)

# Rows: classes (harmful, neutral, supportive); columns: FEATURE_NAMES.
DEFAULT_WEIGHTS = np.array(
    [
        # emp   dism  openq closq advU  advP  excl  caps  short long  overlap
        [-0.8, 2.0, -0.5, 0.0, 0.7, -0.3, 0.5, 0.8, 1.0, 0.4, -0.6],  # harmful
        [-0.1, 0.2, 0.0, 0.3, 0.3, 0.0, 0.0, 0.0, 0.8, 0.6, -0.2],  # neutral
        [1.0, -1.2, 0.9, 0.2, -0.4, 0.6, -0.2, -0.4, -1.5, -0.8, 0.9],  # supportive
    ]
)
DEFAULT_BIAS = np.array([-0.4, 0.8, -0.2])


class SyntheticOracle:
    """The true distribution ``p*(class | context, response)`` of the synthetic data.

    Accepts any strings (the context as a string, a list of turns, or ``None``). See the
    docstrings of this module and of :mod:`~bayespref.data.synthetic.features` for the weights
    and the features.
    """

    feature_names = FEATURE_NAMES

    def __init__(
        self,
        weights: np.ndarray | None = None,
        bias: np.ndarray | None = None,
        temperature: float = 1.0,
    ):
        self.weights = np.array(DEFAULT_WEIGHTS if weights is None else weights, dtype=np.float64)
        self.bias = np.array(DEFAULT_BIAS if bias is None else bias, dtype=np.float64)
        num_classes = SYNTHETIC_LABEL_SPACE.num_classes
        if self.weights.shape != (num_classes, len(FEATURE_NAMES)):
            raise ValueError(
                f"weights must have shape {(num_classes, len(FEATURE_NAMES))}, "
                f"got {self.weights.shape}"
            )
        if self.bias.shape != (num_classes,):
            raise ValueError(f"bias must have shape ({num_classes},), got {self.bias.shape}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.label_space = SYNTHETIC_LABEL_SPACE
        self._utilities = np.asarray(SYNTHETIC_LABEL_SPACE.utilities, dtype=np.float64)

    def features(self, context: str | Sequence[str] | None, response: str) -> np.ndarray:
        """``f(x)``, shape (F,)."""
        return text_features(context, response)

    def explain(self, context: str | Sequence[str] | None, response: str) -> dict[str, float]:
        """Feature name -> value, for reading why a reply got its distribution."""
        return dict(zip(FEATURE_NAMES, self.features(context, response).tolist(), strict=True))

    def _softmax(self, features: np.ndarray) -> np.ndarray:
        logits = (features @ self.weights.T + self.bias) / self.temperature  # (N, C)
        logits -= logits.max(axis=-1, keepdims=True)
        probs = np.exp(logits)
        return probs / probs.sum(axis=-1, keepdims=True)

    def distribution(self, context: str | Sequence[str] | None, response: str) -> np.ndarray:
        """``p*``, shape (C,), summing to 1."""
        return self._softmax(self.features(context, response)[None, :])[0]

    def distributions(self, pairs: Iterable[tuple[str | Sequence[str] | None, str]]) -> np.ndarray:
        """``p*`` for each (context, response) pair, shape (N, C)."""
        rows = [text_features(context, response) for context, response in pairs]
        if not rows:
            return np.zeros((0, self.label_space.num_classes))
        return self._softmax(np.stack(rows))

    def utility(self, context: str | Sequence[str] | None, response: str) -> float:
        """Expected utility ``sum_l u_l p*(l)`` in [-1, 1]."""
        return float(self.distribution(context, response) @ self._utilities)

    def utilities(self, pairs: Iterable[tuple[str | Sequence[str] | None, str]]) -> np.ndarray:
        """Expected utility for each pair, shape (N,)."""
        return self.distributions(pairs) @ self._utilities
