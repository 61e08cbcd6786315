"""The embedded default dataset: emotional-support replies with a known label distribution.

Each item is a user message (``context``, one turn) and a reply (``response``). Its true class
distribution ``p*`` is a deterministic function of the two texts, computed by
:class:`SyntheticOracle`, so a model can learn it from text, and the oracle can score any
(context, response) pair, including replies a language model writes later.

Classes (:data:`SYNTHETIC_LABEL_SPACE`): ``harmful`` (utility -1; alias ``unhelpful``),
``neutral`` (0), ``supportive`` (1).

The oracle
----------
``p*(x) = softmax((W f(x) + b) / temperature)`` with ``W`` of shape (C, F) and 11 features
``f`` read from the text (lower-cased, curly apostrophes straightened, phrases matched on word
boundaries; counts saturate so that repeating a phrase does not buy certainty):

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

The default weights (:data:`DEFAULT_WEIGHTS`, :data:`DEFAULT_BIAS`) make a plain empathetic,
engaged reply with an open question near-certainly ``supportive``, a dismissive one
near-certainly ``harmful``, and mixed replies (warm but pushy advice, neutral information,
off-topic kindness) genuinely split: ``p*`` is spread out for many items.

The annotators
--------------
A fixed pool (:func:`default_annotator_pool`, 20 annotators ``W01``..``W20``, the same for
every seed, so train and valid share annotators and annotator models such as Dawid-Skene have
something to learn). Annotator ``a`` has a reliability ``r_a`` and a bias distribution
``b_a``: on each item it independently draws a label from ``p*`` with probability ``r_a``
(``p*`` is what a careful annotator population says, so disagreement among reliable
annotators is genuine), otherwise from ``b_a``. Its labels follow
``r_a p* + (1 - r_a) b_a``: a Dawid-Skene confusion matrix ``r_a I + (1 - r_a) 1 b_a^T``
applied to ``p*``. The pool mixes experts (r about 0.9), average annotators, lenient and
harsh ones (biased toward ``supportive``/``harmful``), fence-sitters (biased toward
``neutral``) and a spammer (r near 0). Each item gets a uniform number of annotators in
``[min_annotators, max_annotators]``, drawn without replacement, busier annotators more often.

The texts
---------
Contexts are slot-filled messages from 12 topics (a failed exam, a breakup, a lost job, a
pet's death, ...). Replies are assembled from sentence pools according to a latent style
(supportive, warm-but-pushy, neutral, advice, dismissive, short, rambling, off-topic) and
reuse the context's slot values where a reply would engage with them. The style is kept in
``meta`` for analysis but plays no part in ``p*``. Everything is deterministic given ``seed``
(Python's ``random.Random`` for text, NumPy's PCG64 for labels), and different seeds give
nearly disjoint (context, response) pairs.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from collections.abc import Iterable, Sequence

import numpy as np

from .schema import AnnotatedDataset, AnnotatedExample, LabelSpace, LoadReport

logger = logging.getLogger(__name__)

SYNTHETIC_LABEL_SPACE = LabelSpace(
    names=("harmful", "neutral", "supportive"),
    utilities=(-1.0, 0.0, 1.0),
    aliases=(("unhelpful", "harmful"),),
)

# ----------------------------------------------------------------------------------------
# The oracle
# ----------------------------------------------------------------------------------------


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


class SyntheticOracle:
    """The true distribution ``p*(class | context, response)`` of the synthetic data.

    Accepts any strings (the context as a string, a list of turns, or ``None``). See the
    module docstring for the features and weights.
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


# ----------------------------------------------------------------------------------------
# Simulated annotators
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SimulatedAnnotator:
    """Draws from ``p*`` with probability ``reliability``, otherwise from ``bias``."""

    id: str
    kind: str
    reliability: float
    bias: tuple[float, ...]  # (C,) distribution used when not reliable
    activity: float  # relative chance of being picked for an item


_ANNOTATOR_KINDS = {
    # kind: (reliability range, bias over (harmful, neutral, supportive))
    "expert": ((0.85, 0.97), (1 / 3, 1 / 3, 1 / 3)),
    "average": ((0.65, 0.85), (1 / 3, 1 / 3, 1 / 3)),
    "lenient": ((0.45, 0.7), (0.05, 0.25, 0.70)),
    "harsh": ((0.45, 0.7), (0.65, 0.25, 0.10)),
    "fence-sitter": ((0.45, 0.7), (0.10, 0.80, 0.10)),
    "spammer": ((0.0, 0.15), (1 / 3, 1 / 3, 1 / 3)),
}
_POOL_PATTERN = (
    "expert", "average", "lenient", "expert", "harsh", "average", "fence-sitter", "expert",
    "average", "lenient", "harsh", "spammer", "expert", "average", "fence-sitter", "lenient",
    "average", "harsh", "expert", "average",
)  # fmt: skip


def default_annotator_pool(size: int = 20, seed: int = 20230) -> list[SimulatedAnnotator]:
    """The fixed annotator pool: kinds in a fixed pattern, reliabilities and activities drawn
    from ``seed`` (independent of the dataset seed, so every split shares the pool)."""
    if size < 1:
        raise ValueError(f"the pool needs at least one annotator, got size={size}")
    rng = np.random.default_rng(seed)
    pool = []
    for k in range(size):
        kind = _POOL_PATTERN[k % len(_POOL_PATTERN)]
        (low, high), bias = _ANNOTATOR_KINDS[kind]
        pool.append(
            SimulatedAnnotator(
                id=f"W{k + 1:02d}",
                kind=kind,
                reliability=round(float(rng.uniform(low, high)), 3),
                bias=bias,
                activity=round(float(rng.uniform(0.5, 2.0)), 3),
            )
        )
    return pool


# ----------------------------------------------------------------------------------------
# Text generation
# ----------------------------------------------------------------------------------------

_SLOTS = {
    "time": ["today", "yesterday", "last night", "this morning", "this week", "on Monday",
             "on Friday", "over the weekend", "a few days ago", "last month", "two weeks ago"],
    "feeling": ["sad", "anxious", "lost", "exhausted", "angry", "hopeless", "lonely",
                "overwhelmed", "embarrassed", "stressed", "numb", "worthless", "scared",
                "heartbroken", "ashamed", "furious", "confused"],
    "subject": ["chemistry", "calculus", "history", "statistics", "biology", "economics",
                "physics", "programming", "anatomy", "accounting", "philosophy", "French"],
    "exam": ["final", "midterm", "exam", "driving test", "bar exam", "entrance exam", "quiz"],
    "grade": ["D", "failing grade", "42 percent", "C minus", "zero", "lower mark than everyone"],
    "partner": ["my girlfriend", "my boyfriend", "my husband", "my wife", "my partner",
                "my fiancee", "my fiance"],
    "years": ["two", "three", "five", "seven", "ten", "twelve"],
    "workplace": ["bakery", "warehouse", "call centre", "hospital", "law firm", "hotel",
                  "startup", "supermarket", "restaurant", "factory", "bank", "school"],
    "number": ["thirty", "fifty", "eighty", "a hundred", "forty", "sixty"],
    "pet": ["dog", "cat", "rabbit", "parrot", "hamster", "horse", "guinea pig", "tortoise"],
    "pet_name": ["Max", "Luna", "Bella", "Charlie", "Milo", "Daisy", "Rocky", "Coco",
                 "Pepper", "Biscuit", "Ziggy", "Oscar", "Nala", "Toby"],
    "family": ["My mom", "My dad", "My sister", "My brother", "My grandmother", "My uncle",
               "My stepfather", "My aunt", "My son", "My daughter"],
    "fight": ["money", "my career", "politics", "my wedding", "the house", "my girlfriend",
              "how I raise my kids", "my grades", "religion", "the inheritance"],
    "holiday": ["Christmas", "Thanksgiving", "my birthday", "New Year", "Easter", "Diwali",
                "Eid", "the summer holidays"],
    "city": ["Chicago", "Leeds", "Lyon", "Osaka", "Denver", "Glasgow", "Toronto", "Berlin",
             "Perth", "Austin", "Dublin", "Seoul", "Bristol", "Madrid"],
    "gathering": ["a party", "the barbecue", "game night", "the concert", "a birthday dinner",
                  "the office drinks", "the camping trip"],
    "scan": ["x-ray", "MRI", "ultrasound", "blood test", "CT scan", "mammogram"],
    "wait": ["two weeks", "a month", "ten days", "six weeks", "three weeks"],
    "body": ["back", "knee", "shoulder", "neck", "stomach", "wrist", "hip", "jaw"],
    "condition": ["diabetes", "asthma", "migraines", "arthritis", "epilepsy", "depression",
                  "an anxiety disorder", "Crohn's disease", "ADHD"],
    "amount": ["two thousand", "five hundred", "eight thousand", "three thousand", "twelve hundred"],
    "bill": ["rent", "electricity bill", "car loan", "credit card", "phone bill", "tuition"],
    "hours": ["three", "four", "two", "five"],
    "shift": ["twelve", "fourteen", "ten", "sixteen"],
    "friend": ["Sam", "Priya", "Jordan", "Alex", "Maria", "Tom", "Aisha", "Leo", "Nina",
               "Chris", "Mei", "Jamal", "Hannah", "Diego"],
    "relative": ["grandfather", "grandmother", "mom", "dad", "uncle", "best friend", "aunt",
                 "brother", "cousin", "godmother"],
    "venue": ["work", "school", "the conference", "my team meeting", "class", "church",
              "the interview"],
    "feature": ["weight", "accent", "teeth", "clothes", "voice", "hair", "skin", "height"],
    "place": ["the gym", "work", "school", "dinner", "the bus stop", "a family party"],
}  # fmt: skip

_TOPICS = {
    "exam": {
        "events": [
            "I failed my {subject} {exam} {time}.",
            "I studied for weeks and still got a {grade} on my {subject} {exam}.",
            "I just found out I flunked {subject} and might lose my scholarship.",
            "My {subject} professor said my project was not good enough to pass.",
        ],
        "reflections": [  # parallel to "events"
            "Failing {subject} after studying that hard is really discouraging.",
            "Getting a {grade} in {subject} after weeks of work would shake anyone.",
            "Worrying about the scholarship on top of the {subject} result is a lot.",
            "Hearing from your {subject} professor that it is not good enough must sting.",
        ],
        "advice": ["talk to your {subject} professor", "ask about a retake",
                   "make a new study plan for {subject}", "find a study group"],
        "info": ["Lots of students fail an exam at some point.",
                 "Many universities let you retake a {exam}.",
                 "Grades in {subject} are often curved at the end of term."],
    },
    "breakup": {
        "events": [
            "{partner} broke up with me {time}.",
            "I found out {partner} was seeing someone else.",
            "After {years} years together, {partner} and I are splitting up.",
            "{partner} moved out {time} without even saying goodbye.",
        ],
        "reflections": [  # parallel to "events"
            "A breakup like this turns everything upside down.",
            "Finding out about the cheating must have been a shock.",
            "Splitting up after {years} years together is a huge loss.",
            "Having them leave without even a goodbye is so hurtful.",
        ],
        "advice": ["block {partner} on social media", "stay with a friend for a while",
                   "start dating again", "focus on yourself"],
        "info": ["Breakups are one of the most common reasons people seek support.",
                 "Most people take a few months to adjust after a breakup."],
    },
    "job": {
        "events": [
            "I got laid off from my job at the {workplace} {time}.",
            "My boss yelled at me in front of the whole team at the {workplace}.",
            "I've applied to {number} jobs and haven't heard back from any of them.",
            "I was fired from the {workplace} {time} and I have no savings.",
        ],
        "reflections": [  # parallel to "events"
            "Losing the job at the {workplace} out of nowhere is brutal.",
            "Being yelled at in front of your team is humiliating.",
            "Sending {number} applications and hearing nothing back is draining.",
            "Being fired with no savings to fall back on is frightening.",
        ],
        "advice": ["update your resume", "apply for unemployment benefits",
                   "ask your old manager for a reference", "look for jobs at another {workplace}"],
        "info": ["Layoffs are common in this economy.",
                 "Job searches often take several months.",
                 "Most applications never get a reply, it's not personal."],
    },
    "pet": {
        "events": [
            "My {pet} {pet_name} died {time}.",
            "We had to put our {pet} {pet_name} to sleep {time}.",
            "My {pet} {pet_name} is very sick and the vet can't find out why.",
            "{pet_name}, my {pet}, ran away {time} and hasn't come back.",
        ],
        "reflections": [  # parallel to "events"
            "Losing {pet_name} is losing a member of your family.",
            "{pet_name} was clearly so important to you.",
            "Not knowing what is wrong with {pet_name} is so worrying.",
            "Not knowing where {pet_name} is must be frightening.",
        ],
        "advice": ["get another {pet}", "put up posters for {pet_name}",
                   "get a second opinion from another vet", "make a little memorial for {pet_name}"],
        "info": ["The average {pet} lives around ten to fifteen years.",
                 "Grief over a pet is as real as any other grief."],
    },
    "family": {
        "events": [
            "{family} and I had a huge fight about {fight} {time}.",
            "{family} told me I was a disappointment.",
            "{family} hasn't spoken to me since {holiday}.",
            "{family} keeps criticising everything I do.",
        ],
        "reflections": [  # parallel to "events"
            "Fighting with your family about {fight} is exhausting.",
            "Hearing you are a disappointment from family cuts deep.",
            "The silence since {holiday} sounds painful.",
            "Being criticised all the time by family wears you down.",
        ],
        "advice": ["apologise first", "write them a letter", "set some boundaries",
                   "stop visiting for a while"],
        "info": ["Family conflict around {holiday} is very common.",
                 "Many families argue about {fight}."],
    },
    "lonely": {
        "events": [
            "I moved to {city} for work and I don't know anyone here.",
            "All my friends seem busy and nobody invited me to {gathering}.",
            "I spent {holiday} completely alone this year.",
            "Since moving to {city} I go days without talking to anyone.",
        ],
        "reflections": [  # parallel to "events"
            "Starting over in {city} without friends is hard.",
            "Being left out of {gathering} would sting for anyone.",
            "Spending {holiday} alone is really lonely.",
            "Going days in {city} without talking to anyone is isolating.",
        ],
        "advice": ["join a club in {city}", "download a friendship app", "volunteer somewhere",
                   "call an old friend"],
        "info": ["Loneliness is very common after a move.",
                 "{city} has lots of meetup groups."],
    },
    "health": {
        "events": [
            "The doctor found something on my {scan} and I have to wait {wait} for results.",
            "My {body} pain has been getting worse for months.",
            "I was diagnosed with {condition} {time}.",
            "My {scan} came back abnormal and nobody will explain it to me.",
        ],
        "reflections": [  # parallel to "events"
            "Waiting {wait} for {scan} results sounds agonising.",
            "Living with {body} pain for months wears you down.",
            "A {condition} diagnosis is a lot to take in.",
            "An abnormal {scan} with no explanation would scare anyone.",
        ],
        "advice": ["get a second opinion", "stop googling symptoms", "ask the doctor to explain",
                   "see a specialist for your {body}"],
        "info": ["Most abnormal {scan} results turn out to be benign.",
                 "{condition} is manageable for many people with treatment."],
    },
    "money": {
        "events": [
            "I can't pay my {bill} this month.",
            "I lost {amount} dollars on a bad investment.",
            "My car broke down and the repair costs more than I have.",
            "I'm {amount} dollars in debt and the interest keeps growing.",
        ],
        "reflections": [  # parallel to "events"
            "Not being able to cover the {bill} is scary.",
            "Losing {amount} dollars is a big hit.",
            "A car repair you can't afford is so stressful.",
            "Debt that keeps growing feels like a trap.",
        ],
        "advice": ["make a budget", "talk to a debt counsellor", "sell some of your things",
                   "ask your landlord for more time"],
        "info": ["Many people live paycheck to paycheck.",
                 "Some charities offer free debt advice."],
    },
    "burnout": {
        "events": [
            "I haven't slept more than {hours} hours a night in weeks.",
            "I'm working {shift} hour shifts at the {workplace} and I'm completely burned out.",
            "I cry in the car before every shift at the {workplace}.",
        ],
        "reflections": [  # parallel to "events"
            "Running on {hours} hours of sleep for weeks is unsustainable.",
            "{shift} hour shifts at the {workplace} would burn anyone out.",
            "Crying before every shift tells you how much this is costing you.",
        ],
        "advice": ["take some sick days", "talk to your manager about your hours",
                   "cut down on caffeine", "quit the {workplace}"],
        "info": ["Burnout is common among shift workers.",
                 "Adults generally need seven to nine hours of sleep."],
    },
    "friendship": {
        "events": [
            "My best friend {friend} stopped replying to my messages.",
            "{friend} told everyone a secret I shared with them.",
            "I wasn't invited to {friend}'s wedding.",
            "{friend} said I'm too much to deal with.",
        ],
        "reflections": [  # parallel to "events"
            "Being ignored by {friend} after all these years hurts.",
            "{friend} breaking your trust like that is a real betrayal.",
            "Being left off {friend}'s guest list stings.",
            "Being told you're too much by {friend} really hurts.",
        ],
        "advice": ["confront {friend}", "text {friend} one more time", "find new friends",
                   "ask {friend} directly what happened"],
        "info": ["Friendships often drift as people get older.",
                 "People sometimes go quiet because of their own problems."],
    },
    "grief": {
        "events": [
            "My {relative} passed away {time}.",
            "It's been a year since my {relative} died and it still hurts.",
            "I never got to say goodbye to my {relative} before they died.",
        ],
        "reflections": [  # parallel to "events"
            "Losing your {relative} is one of the hardest things there is.",
            "A year on, missing your {relative} is still natural.",
            "Not getting to say goodbye to your {relative} leaves a painful gap.",
        ],
        "advice": ["join a grief support group", "write a letter to your {relative}",
                   "keep busy", "visit the grave"],
        "info": ["Grief doesn't follow a fixed timeline.",
                 "Anniversaries often bring grief back."],
    },
    "selfesteem": {
        "events": [
            "I gave a presentation at {venue} {time} and completely froze.",
            "Someone made fun of my {feature} at {place}.",
            "I keep comparing myself to everyone and I always come out worse.",
        ],
        "reflections": [  # parallel to "events"
            "Freezing during a presentation at {venue} is mortifying.",
            "Comments about your {feature} can stay with you for a long time.",
            "Constantly comparing yourself to others is exhausting.",
        ],
        "advice": ["practise in front of a mirror", "ignore the comments about your {feature}",
                   "stop using social media", "take a public speaking class"],
        "info": ["Public speaking is one of the most common fears.",
                 "Most people are too busy with themselves to remember one bad moment."],
    },
}  # fmt: skip

_OPENERS = [
    "",
    "",
    "",
    "Honestly, ",
    "I don't know who else to tell, but ",
    "Sorry to dump this on you, but ",
    "Okay so ",
    "I need to vent. ",
    "This is embarrassing, but ",
    "Can I tell you something? ",
    "Ugh. ",
    "So, ",
]
_FEELINGS = [
    "I feel {feeling}.",
    "I've been feeling {feeling} ever since.",
    "Now I'm just {feeling} all the time.",
    "I can't stop feeling {feeling}.",
    "I'm so {feeling} right now.",
    "Part of me is {feeling} and part of me is numb.",
    "I honestly feel {feeling} and stupid.",
    "",
]
_CLOSERS = [
    "",
    "",
    " Is that normal?",
    " I don't know what to do.",
    " I can't stop thinking about it.",
    " I haven't told anyone.",
    " I just needed to say it.",
    " Any thoughts?",
    " What should I do?",
]
_EMPATHY_LINES = [
    "I'm so sorry to hear that.",
    "I'm really sorry.",
    "That sounds really hard.",
    "That sounds so painful.",
    "I hear you.",
    "It makes sense that you feel {feeling}.",
    "That must be so hard.",
    "You're not alone in this.",
    "Thank you for sharing this with me.",
    "I can imagine how {feeling} you must be.",
    "It's okay to feel {feeling}.",
    "I understand why you're {feeling}.",
    "I'm here for you.",
]
_OPEN_QUESTIONS = [
    "How are you holding up?",
    "What has been the hardest part for you?",
    "Would you like to talk more about it?",
    "How are you feeling right now?",
    "What do you think you need most right now?",
    "Do you want to tell me more about what happened?",
    "What would help you feel a bit better today?",
]
_CLOSED_QUESTIONS = [
    "Did you tell anyone?",
    "Is it any better today?",
    "Have you eaten today?",
    "Are you sure?",
    "Was it expected?",
    "Did that happen before?",
    "Is someone with you?",
]
_UNSOLICITED = [
    "You should {advice}.",
    "You need to {advice}.",
    "You must {advice} right away.",
    "You have to {advice}.",
    "Honestly you should just {advice}.",
    "You really need to {advice} now.",
]
_PERMISSION = [
    "If you want, maybe you could {advice}.",
    "Would it help to {advice}?",
    "When you're ready, you could try to {advice}.",
    "One option might be to {advice}, if that feels right.",
]
_GENERIC_ADVICE = [
    "talk to someone you trust",
    "get some sleep",
    "go for a walk",
    "write down how you feel",
    "see a therapist",
    "drink some water",
]
_GENERIC_INFO = [
    "These things happen to a lot of people.",
    "Situations like this are more common than people think.",
    "It usually takes time for things to settle.",
]
_DISMISSIVE_LINES = [
    "Whatever.",
    "Just get over it.",
    "Honestly, that's your fault.",
    "Stop complaining, it's not a big deal.",
    "Who cares?",
    "Grow up.",
    "Sorry you feel that way.",
    "You're overreacting.",
    "That's life, deal with it.",
    "People have real problems, you know.",
    "Nobody cares about that.",
    "Calm down.",
    "What did you expect?",
    "Man up.",
]
_SHORT = [
    "ok.",
    "Hmm.",
    "Sure.",
    "Okay then.",
    "lol",
    "k",
    "Right.",
    "Oh.",
    "Noted.",
    "Cool.",
    "Sad.",
    "Yikes.",
]
_FILLER = [
    "By the way, I watched a great documentary about whales last night.",
    "My neighbour has been renovating his kitchen for months now.",
    "I think the weather is supposed to get better next week.",
    "I've been trying to learn how to bake sourdough bread.",
    "Anyway, traffic was terrible this morning.",
    "I read somewhere that octopuses have three hearts.",
    "My cousin just bought a new bike and keeps talking about it.",
    "There is a new coffee place near my office that is always crowded.",
    "I still have not finished the book I started in January.",
    "Did you know that honey never goes bad?",
    "My phone battery has been dying really fast lately.",
    "We are planning a trip to the coast later this year.",
]
_SELF = [
    "Something like that happened to me once, and I got through it.",
    "I remember going through something similar.",
    "My friend had the same thing happen to them.",
]

# style: (probability, recipe) where a recipe maps component -> (probability, max repeats)
_STYLES = {
    "supportive": (0.24, {"empathy": (0.95, 2), "reflection": (0.8, 1), "open": (0.75, 1),
                          "permission": (0.3, 1), "info": (0.1, 1)}),
    "pushy": (0.16, {"empathy": (0.8, 1), "reflection": (0.4, 1), "unsolicited": (0.95, 2),
                     "exclaim": (0.5, 1), "closed": (0.2, 1)}),
    "neutral": (0.16, {"info": (0.95, 2), "closed": (0.5, 1), "reflection": (0.3, 1),
                       "self": (0.3, 1)}),
    "advice": (0.14, {"unsolicited": (1.0, 3), "info": (0.4, 1), "closed": (0.3, 1),
                      "exclaim": (0.35, 1), "caps": (0.15, 1)}),
    "dismissive": (0.12, {"dismissive": (1.0, 2), "unsolicited": (0.3, 1),
                          "exclaim": (0.45, 1), "caps": (0.3, 1)}),
    "short": (0.07, {"short": (1.0, 1)}),
    "rambling": (0.06, {"filler": (1.0, 8), "info": (0.7, 2), "empathy": (0.4, 1),
                        "unsolicited": (0.4, 1), "self": (0.5, 1)}),
    "off-topic": (0.05, {"empathy": (0.7, 1), "elsewhere": (1.0, 1), "open": (0.5, 1)}),
}  # fmt: skip
_STYLE_NAMES = tuple(_STYLES)
_STYLE_WEIGHTS = tuple(p for p, _ in _STYLES.values())
_TOPIC_NAMES = tuple(_TOPICS)


class _Slots(dict):
    """Fills ``{slot}`` placeholders with random choices, the same choice for every use."""

    def __init__(self, rng: random.Random):
        super().__init__()
        self.rng = rng
        self.event = 0  # index of the topic's event; its reflection has the same index

    def __missing__(self, key: str) -> str:
        value = self.rng.choice(_SLOTS[key])
        self[key] = value
        return value


def _fill(template: str, slots: _Slots) -> str:
    return template.format_map(slots)


def _context(rng: random.Random, topic: str, slots: _Slots) -> str:
    slots.event = rng.randrange(len(_TOPICS[topic]["events"]))
    event = _fill(_TOPICS[topic]["events"][slots.event], slots)
    opener = rng.choice(_OPENERS)
    first, _, rest = event.partition(" ")
    if opener.endswith((", ", "so ", "but ")) and first in _LOWERCASE_AFTER_OPENER:
        event = f"{first.lower()} {rest}"
    feeling = _fill(rng.choice(_FEELINGS), slots)
    return f"{opener}{event} {feeling}".strip() + rng.choice(_CLOSERS)


_LOWERCASE_AFTER_OPENER = frozenset({"My", "The", "All", "After", "Since", "Someone", "We"})


def _response(rng: random.Random, topic: str, slots: _Slots, style: str) -> str:
    spec = _TOPICS[topic]
    recipe = _STYLES[style][1]
    parts: dict[str, list[str]] = {}

    def pick(component: str, make) -> None:
        probability, most = recipe.get(component, (0.0, 0))
        if rng.random() < probability:
            chosen: list[str] = []
            for _ in range(rng.randint(1, most)):
                line = make()
                if line not in chosen:
                    chosen.append(line)
            parts[component] = chosen

    advice = lambda: _fill(rng.choice(spec["advice"] + _GENERIC_ADVICE[:2]), slots)  # noqa: E731
    pick("dismissive", lambda: rng.choice(_DISMISSIVE_LINES))
    pick("short", lambda: rng.choice(_SHORT))
    pick("empathy", lambda: _fill(rng.choice(_EMPATHY_LINES), slots))
    pick("reflection", lambda: _fill(spec["reflections"][slots.event], slots))
    pick(
        "elsewhere",
        lambda: _fill(rng.choice(_TOPICS[_other_topic(rng, topic)]["reflections"]), _Slots(rng)),
    )
    pick("self", lambda: rng.choice(_SELF))
    pick("info", lambda: _fill(rng.choice(spec["info"] + _GENERIC_INFO), slots))
    pick("filler", lambda: rng.choice(_FILLER))
    pick("unsolicited", lambda: rng.choice(_UNSOLICITED).format(advice=advice()))
    pick("permission", lambda: rng.choice(_PERMISSION).format(advice=advice()))
    pick("closed", lambda: rng.choice(_CLOSED_QUESTIONS))
    pick("open", lambda: rng.choice(_OPEN_QUESTIONS))
    order = ["dismissive", "short", "empathy", "reflection", "elsewhere", "self", "info",
             "filler", "unsolicited", "permission", "closed", "open"]  # fmt: skip
    sentences = [line for component in order for line in parts.get(component, [])]
    if "filler" in parts:  # rambling: interleave the on-topic lines with the filler
        rng.shuffle(sentences)
    if not sentences:
        sentences = [_fill(rng.choice(spec["info"] + _GENERIC_INFO), slots)]
    if "exclaim" in recipe and rng.random() < recipe["exclaim"][0]:
        marks = rng.choice(["!", "!!", "!!!"])
        sentences = [s[:-1] + marks if s.endswith(".") else s for s in sentences]
    text = " ".join(sentences)
    if "caps" in recipe and rng.random() < recipe["caps"][0]:
        text = text.upper()
    elif rng.random() < 0.05:  # a stray shouted word in any style
        words = text.split(" ")
        k = rng.randrange(len(words))
        words[k] = words[k].upper()
        text = " ".join(words)
    return text


def _other_topic(rng: random.Random, topic: str) -> str:
    other = rng.choice(_TOPIC_NAMES[:-1])
    return _TOPIC_NAMES[-1] if other == topic else other


def _sample_item(rng: random.Random) -> tuple[str, str, str, str]:
    """``(topic, style, context, response)`` for one item."""
    topic = rng.choice(_TOPIC_NAMES)
    style = rng.choices(_STYLE_NAMES, weights=_STYLE_WEIGHTS)[0]
    slots = _Slots(rng)
    context = _context(rng, topic, slots)
    return topic, style, context, _response(rng, topic, slots, style)


# ----------------------------------------------------------------------------------------
# Public constructors
# ----------------------------------------------------------------------------------------


def make_synthetic_dataset(
    n: int,
    seed: int = 0,
    min_annotators: int = 1,
    max_annotators: int = 7,
    *,
    pool: Sequence[SimulatedAnnotator] | None = None,
    oracle: SyntheticOracle | None = None,
    name: str | None = None,
) -> AnnotatedDataset:
    """``n`` synthetic items with ``true_distribution = p*`` and simulated annotations.

    Each item gets ``k ~ Uniform{min_annotators..max_annotators}`` distinct annotators from
    ``pool`` (default :func:`default_annotator_pool`), picked with probability proportional to
    their activity. Deterministic given ``seed``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pool = list(default_annotator_pool() if pool is None else pool)
    if not 1 <= min_annotators <= max_annotators:
        raise ValueError(
            f"need 1 <= min_annotators <= max_annotators, got {min_annotators}, {max_annotators}"
        )
    if max_annotators > len(pool):
        raise ValueError(f"max_annotators={max_annotators} exceeds the pool of {len(pool)}")
    oracle = oracle or SyntheticOracle()
    space = oracle.label_space

    text_rng = random.Random(f"bayespref-synthetic-items-{seed}")
    items = [_sample_item(text_rng) for _ in range(n)]
    true = oracle.distributions((context, response) for _, _, context, response in items)

    rng = np.random.default_rng([seed, 0x5EED])
    num_annotators = rng.integers(min_annotators, max_annotators + 1, size=n)  # (N,)
    # Weighted sampling without replacement: top-k of log(activity) + Gumbel noise.
    log_activity = np.log([a.activity for a in pool])
    keys = log_activity[None, :] + rng.gumbel(size=(n, len(pool)))  # (N, P)
    order = np.argsort(-keys, axis=1, kind="stable")
    item_of = np.repeat(np.arange(n), num_annotators)  # (M,)
    slot_of = np.arange(len(item_of)) - np.repeat(
        np.cumsum(num_annotators) - num_annotators, num_annotators
    )
    who = order[item_of, slot_of]  # (M,) annotator index
    reliability = np.array([a.reliability for a in pool])[who][:, None]  # (M, 1)
    bias = np.array([a.bias for a in pool], dtype=np.float64)[who]  # (M, C)
    probs = reliability * true[item_of] + (1 - reliability) * bias  # (M, C)
    cdf = np.cumsum(probs, axis=1)
    labels = (rng.random(len(item_of))[:, None] * cdf[:, -1:] > cdf).sum(axis=1)  # (M,)
    labels = np.minimum(labels, space.num_classes - 1)

    examples = []
    bounds = np.concatenate([[0], np.cumsum(num_annotators)])
    for i, (topic, style, context, response) in enumerate(items):
        lo, hi = bounds[i], bounds[i + 1]
        annotations = [(pool[a].id, int(c)) for a, c in zip(who[lo:hi], labels[lo:hi], strict=True)]
        examples.append(
            AnnotatedExample(
                id=f"syn{seed}-{i:06d}",
                context=[context],
                response=response,
                counts=np.bincount(labels[lo:hi], minlength=space.num_classes).astype(np.int64),
                annotations=annotations,
                true_distribution=true[i],
                meta={"topic": topic, "style": style},
            )
        )
    report = LoadReport(source=f"synthetic(n={n}, seed={seed})", read=n, kept=n)
    logger.info("%s", report.summary())
    return AnnotatedDataset(
        examples=examples, label_space=space, name=name or f"synthetic-{seed}", report=report
    )


def make_synthetic_contexts(
    n: int, seed: int = 0, *, candidates: int = 4, oracle: SyntheticOracle | None = None
) -> list[dict]:
    """``n`` contexts, each with a gold (high-utility) reply, for generator calibration.

    Returns dicts ``{"id", "context" (list of one turn), "gold", "gold_utility", "topic"}``.
    The gold reply is the best, by oracle utility, of ``candidates`` supportive replies.
    """
    if n < 0 or candidates < 1:
        raise ValueError(f"need n >= 0 and candidates >= 1, got {n}, {candidates}")
    oracle = oracle or SyntheticOracle()
    rng = random.Random(f"bayespref-synthetic-contexts-{seed}")
    rows = []
    for i in range(n):
        topic = rng.choice(_TOPIC_NAMES)
        slots = _Slots(rng)
        context = _context(rng, topic, slots)
        replies = [_response(rng, topic, slots, "supportive") for _ in range(candidates)]
        utilities = oracle.utilities((context, r) for r in replies)
        best = int(np.argmax(utilities))
        rows.append(
            {
                "id": f"ctx{seed}-{i:06d}",
                "context": [context],
                "gold": replies[best],
                "gold_utility": float(utilities[best]),
                "topic": topic,
            }
        )
    return rows


def load_synthetic(
    path: None = None,
    *,
    n: int = 1000,
    seed: int = 0,
    min_annotators: int = 1,
    max_annotators: int = 7,
    pool_size: int = 20,
    temperature: float = 1.0,
    strict: bool = False,
    name: str | None = None,
) -> AnnotatedDataset:
    """:func:`make_synthetic_dataset` behind the loader interface (``path`` must be None)."""
    if path is not None:
        raise ValueError(f"the synthetic dataset is generated, it takes no path (got {path!r})")
    del strict  # nothing is ever skipped
    return make_synthetic_dataset(
        n,
        seed=seed,
        min_annotators=min_annotators,
        max_annotators=max_annotators,
        pool=default_annotator_pool(pool_size),
        oracle=SyntheticOracle(temperature=temperature),
        name=name,
    )
