"""The texts of the synthetic data: templated user messages and replies in a latent style.

Contexts are slot-filled messages from 12 topics (a failed exam, a breakup, a lost job, a
pet's death, ...). Replies are assembled from sentence pools according to a latent style
(supportive, warm-but-pushy, neutral, advice, dismissive, short, rambling, off-topic) and
reuse the context's slot values where a reply would engage with them. The style is kept in
``meta`` for analysis but plays no part in ``p*``. Every draw comes from the
``random.Random`` passed in, so a seeded generator gives the same texts every time.
"""

from __future__ import annotations

import random

from .topics import SLOTS, TOPICS

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
_TOPIC_NAMES = tuple(TOPICS)


class _Slots(dict):
    """Fills ``{slot}`` placeholders with random choices, the same choice for every use."""

    def __init__(self, rng: random.Random):
        super().__init__()
        self.rng = rng
        self.event = 0  # index of the topic's event; its reflection has the same index

    def __missing__(self, key: str) -> str:
        value = self.rng.choice(SLOTS[key])
        self[key] = value
        return value


def _fill(template: str, slots: _Slots) -> str:
    return template.format_map(slots)


def _context(rng: random.Random, topic: str, slots: _Slots) -> str:
    slots.event = rng.randrange(len(TOPICS[topic]["events"]))
    event = _fill(TOPICS[topic]["events"][slots.event], slots)
    opener = rng.choice(_OPENERS)
    first, _, rest = event.partition(" ")
    if opener.endswith((", ", "so ", "but ")) and first in _LOWERCASE_AFTER_OPENER:
        event = f"{first.lower()} {rest}"
    feeling = _fill(rng.choice(_FEELINGS), slots)
    return f"{opener}{event} {feeling}".strip() + rng.choice(_CLOSERS)


_LOWERCASE_AFTER_OPENER = frozenset({"My", "The", "All", "After", "Since", "Someone", "We"})


def _response(rng: random.Random, topic: str, slots: _Slots, style: str) -> str:
    spec = TOPICS[topic]
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
        lambda: _fill(rng.choice(TOPICS[_other_topic(rng, topic)]["reflections"]), _Slots(rng)),
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


def sample_item(rng: random.Random) -> tuple[str, str, str, str]:
    """``(topic, style, context, response)`` for one item of the synthetic dataset."""
    topic = rng.choice(_TOPIC_NAMES)
    style = rng.choices(_STYLE_NAMES, weights=_STYLE_WEIGHTS)[0]
    slots = _Slots(rng)
    context = _context(rng, topic, slots)
    return topic, style, context, _response(rng, topic, slots, style)


def sample_context_with_replies(
    rng: random.Random, num_replies: int, style: str
) -> tuple[str, str, list[str]]:
    """``(topic, context, replies)``: one user message and ``num_replies`` replies to it, all
    in ``style`` (one of the latent styles, e.g. ``"supportive"``) and sharing its slots."""
    topic = rng.choice(_TOPIC_NAMES)
    slots = _Slots(rng)
    context = _context(rng, topic, slots)
    return topic, context, [_response(rng, topic, slots, style) for _ in range(num_replies)]
