"""The embedded default dataset: emotional-support replies with a known label distribution.

Each item is a user message (``context``, one turn) and a reply (``response``). Its true class
distribution ``p*`` is a deterministic function of the two texts, computed by
:class:`SyntheticOracle`, so a model can learn it from text, and the oracle can score any
(context, response) pair, including replies a language model writes later.

Classes (:data:`SYNTHETIC_LABEL_SPACE`): ``harmful`` (utility -1; alias ``unhelpful``),
``neutral`` (0), ``supportive`` (1).

Modules, one concept each:

================ ==========================================================================
``features``     the text features ``f(x)`` the oracle reads (:func:`text_features`)
``oracle``       ``p*(x) = softmax((W f(x) + b) / temperature)``: :class:`SyntheticOracle`,
                 :data:`DEFAULT_WEIGHTS`, :data:`DEFAULT_BIAS`, :data:`SYNTHETIC_LABEL_SPACE`
``annotators``   the fixed pool of noisy annotators (:func:`default_annotator_pool`) and how
                 they label an item
``topics``       what the users talk about: slot values and the 12 topics' templates
``texts``        templated user messages and replies in a latent style
``dataset``      the constructors: :func:`make_synthetic_dataset`,
                 :func:`make_synthetic_contexts`, :func:`load_synthetic`
================ ==========================================================================

Everything is deterministic given ``seed`` (Python's ``random.Random`` for text, NumPy's
PCG64 for labels), and different seeds give nearly disjoint (context, response) pairs.
"""

from .annotators import SimulatedAnnotator, default_annotator_pool
from .dataset import load_synthetic, make_synthetic_contexts, make_synthetic_dataset
from .features import FEATURE_NAMES, STOP_WORDS, text_features
from .oracle import DEFAULT_BIAS, DEFAULT_WEIGHTS, SYNTHETIC_LABEL_SPACE, SyntheticOracle

__all__ = [
    "DEFAULT_BIAS",
    "DEFAULT_WEIGHTS",
    "FEATURE_NAMES",
    "STOP_WORDS",
    "SYNTHETIC_LABEL_SPACE",
    "SimulatedAnnotator",
    "SyntheticOracle",
    "default_annotator_pool",
    "load_synthetic",
    "make_synthetic_contexts",
    "make_synthetic_dataset",
    "text_features",
]
