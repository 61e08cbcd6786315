"""The text features ``f(x)`` that the synthetic oracle reads from a (context, response) pair.

Eleven features, in :data:`FEATURE_NAMES` order, read from the text lower-cased, curly
apostrophes straightened, phrases matched on word boundaries; counts saturate so that
repeating a phrase does not buy certainty. The last column says which classes the default
weights (:data:`~bayespref.data.synthetic.oracle.DEFAULT_WEIGHTS`) push each feature toward:

================== ======================================================== ============================
feature            what is counted                                          pushes toward
================== ======================================================== ============================
empathy            "I'm sorry", "sorry to hear", "that sounds", "I hear      supportive
                   you", "understand", "feel", "must be hard", "makes
                   sense", "you're not alone", "here for you", ... (max 3)
dismissive         "whatever", "get over it", "just stop", "your fault",     harmful (strongly)
                   "not a big deal", "grow up", "who cares", "deal with
                   it", "sorry you feel that way", ... (max 3)
open_question      questions with how/what/why/"tell me"/"would you like"    supportive
                   (max 2)
closed_question    other questions (max 2)                                  neutral, a little supportive
advice_unsolicited "you should", "you must", "you need to", "you have to",   harmful
                   "just quit/leave/ignore/..." (max 3)
advice_permission  "if you want", "would it help", "you could try", "when    supportive
                   you're ready", ... (max 2)
exclamation        number of "!" / 2 (max 3)                                harmful
caps               ALL-CAPS words of 2+ letters / 2 (max 2)                 harmful
short              (6 - words) / 5, clipped to [0, 1]                       harmful and neutral
long               (words - 60) / 40, clipped to [0, 2]                     neutral and harmful
overlap            content words (not stop words, 3+ letters, crude         supportive
                   plural stemming) the reply shares with the context / 2
                   (max 2): does the reply engage with what the user said
================== ======================================================== ============================
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np


def _phrases(*patterns: str) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(patterns) + r")\b")


_EMPATHY = _phrases(
    r"i'?m (?:so |really |very |truly )?sorry",
    r"sorry to hear",
    r"that sounds",
    r"i hear you",
    r"understand(?:able|s)?",
    r"feel(?:s|ing|ings)?",
    r"must (?:be|feel) (?:so |really |very )?(?:hard|tough|difficult|painful|exhausting|lonely|scary|frightening|overwhelming|heartbreaking)",
    r"makes (?:a lot of |total )?sense",
    r"you'?re not alone",
    r"here for you",
    r"thank you for (?:sharing|telling|trusting)",
    r"that'?s (?:so |really )?(?:hard|tough|rough|painful|heartbreaking)",
    r"i can imagine",
    r"(?:it'?s|that'?s) (?:okay|ok|normal) to",
    r"proud of you",
    r"sending (?:you )?(?:hugs|love)",
)
_DISMISSIVE = _phrases(
    r"whatever",
    r"get over it",
    r"just stop",
    r"(?:it'?s |that'?s )?(?:all )?your (?:own )?fault",
    r"stop (?:complaining|whining|crying|moaning)",
    r"(?:not a|no) big deal",
    r"grow up",
    r"who cares",
    r"nobody cares",
    r"deal with it",
    r"over ?react(?:ing)?",
    r"so dramatic",
    r"man up",
    r"suck it up",
    r"calm down",
    r"that'?s life",
    r"sorry you feel that way",
    r"what did you expect",
    r"i don'?t care",
    r"not my problem",
    r"stupid",
    r"pathetic",
    r"toughen up",
)
_OPEN_QUESTION = _phrases(
    r"how",
    r"what",
    r"why",
    r"which",
    r"tell me",
    r"would you like",
    r"do you want to (?:talk|share|say)",
    r"can you (?:tell|share|say)",
    r"in what way",
)
_ADVICE_UNSOLICITED = _phrases(
    r"you (?:should|must|need to|have to|ought to|gotta)",
    r"you'?ve got to",
    r"just (?:go|do|quit|leave|ignore|tell|call|forget|move on|find|get)",
)
_ADVICE_PERMISSION = _phrases(
    r"if you (?:want|would like|'d like|feel ready)",
    r"would it help",
    r"you (?:could|might) (?:try|consider)",
    r"maybe you could",
    r"one option",
    r"when you'?re ready",
    r"if that feels right",
)
_QUESTION = re.compile(r"[^.!?\n]*\?")
_CAPS_WORD = re.compile(r"\b[A-Z]{2,}\b")
_CAPS_EXEMPT = frozenset({"OK", "TV", "UK", "US", "USA", "AI", "ID", "AM", "PM", "DM"})
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")

STOP_WORDS = frozenset(
    """
    a about after again all also am an and any are as at be because been before being but by
    can can't could did didn't do does doesn't don't even ever every for from get got had has
    have haven't he her here him his how i i'd i'll i'm i've if in into is isn't it it's its
    just know like me more most my myself no not now of off on one only or other our out over
    own really said same say she so some still such than that that's the their them then there
    these they thing things think this those through to too very want was wasn't way we well
    were what when where which while who why will with won't would you you'd you'll you're
    you've your yours feel feeling felt sorry hear sounds sound thank thanks maybe much many
    something anything anyone someone everyone nothing time day today yesterday last week
    tell told going gone make made back let see seem seems okay yes yeah lot lots since
    """.split()
)

FEATURE_NAMES = (
    "empathy",
    "dismissive",
    "open_question",
    "closed_question",
    "advice_unsolicited",
    "advice_permission",
    "exclamation",
    "caps",
    "short",
    "long",
    "overlap",
)


def _normalise(text: str) -> str:
    return text.replace("\u2019", "'").replace("\u2018", "'")


def _content_words(text: str) -> set[str]:
    words = set()
    for word in _WORD.findall(text):
        if word in STOP_WORDS or len(word) < 3:
            continue
        if word.endswith("'s"):
            word = word[:-2]
        elif word.endswith("ies") and len(word) > 4:
            word = word[:-3] + "y"
        elif word.endswith("s") and not word.endswith("ss") and len(word) > 4:
            word = word[:-1]
        words.add(word)
    return words


def _context_text(context: str | Sequence[str] | None) -> str:
    if context is None:
        return ""
    if isinstance(context, str):
        return context
    return "\n".join(context)


def text_features(context: str | Sequence[str] | None, response: str) -> np.ndarray:
    """The oracle's feature vector ``f(x)``, shape (F,) float64, in :data:`FEATURE_NAMES` order.

    ``context`` is a string, a list of turns (all are used for topic overlap) or ``None``.
    """
    raw = _normalise(response)
    text = raw.lower()
    questions = _QUESTION.findall(text)
    open_questions = sum(1 for q in questions if _OPEN_QUESTION.search(q))
    caps = sum(1 for w in _CAPS_WORD.findall(raw) if w not in _CAPS_EXEMPT)
    num_words = len(_WORD.findall(text))
    # A dismissive phrase consumes its words: "I'm sorry you feel that way" is no apology.
    undismissive, dismissive = _DISMISSIVE.subn(" ", text)
    shared = _content_words(text) & _content_words(_normalise(_context_text(context)).lower())
    return np.array(
        [
            min(len(_EMPATHY.findall(undismissive)), 3),
            min(dismissive, 3),
            min(open_questions, 2),
            min(len(questions) - open_questions, 2),
            min(len(_ADVICE_UNSOLICITED.findall(text)), 3),
            min(len(_ADVICE_PERMISSION.findall(text)), 2),
            min(raw.count("!"), 6) / 2,
            min(caps, 4) / 2,
            min(max((6 - num_words) / 5, 0.0), 1.0),
            min(max((num_words - 60) / 40, 0.0), 2.0),
            min(len(shared), 4) / 2,
        ],
        dtype=np.float64,
    )
