"""The synthetic dataset and its oracle: determinism, the oracle's directions, disagreement,
annotator bookkeeping, and that p* is learnable from the text."""

import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayespref.data import (
    SYNTHETIC_LABEL_SPACE,
    SyntheticOracle,
    default_annotator_pool,
    make_synthetic_contexts,
    make_synthetic_dataset,
)

ORACLE = SyntheticOracle()
CONTEXT = ["I failed my chemistry final yesterday. I feel hopeless."]


@pytest.fixture(scope="module")
def big():
    start = time.perf_counter()
    ds = make_synthetic_dataset(5000, seed=0)
    return ds, time.perf_counter() - start


def entropy(p):
    return -(p * np.log(np.clip(p, 1e-300, None))).sum(axis=-1)


def test_fast_enough(big):
    _, seconds = big
    assert seconds < 4.0  # about 1 s on one core; the target is < 2 s, slack for shared CI


def test_deterministic_given_seed():
    a, b = make_synthetic_dataset(200, seed=5), make_synthetic_dataset(200, seed=5)
    assert [(e.id, e.context, e.response, e.annotations) for e in a] == [
        (e.id, e.context, e.response, e.annotations) for e in b
    ]
    np.testing.assert_array_equal(a.counts(), b.counts())
    np.testing.assert_array_equal(a.true_distributions(), b.true_distributions())
    c = make_synthetic_dataset(200, seed=6)
    assert [e.response for e in a] != [e.response for e in c]


def test_seeds_give_nearly_disjoint_splits(big):
    train, _ = big
    valid = make_synthetic_dataset(1000, seed=1)
    pairs = {(e.context[0], e.response) for e in train}
    contexts = {e.context[0] for e in train}
    assert np.mean([(e.context[0], e.response) in pairs for e in valid]) < 0.01
    assert np.mean([e.context[0] in contexts for e in valid]) < 0.05


def test_true_distribution_is_the_oracle_of_the_text(big):
    ds, _ = big
    p = ds.true_distributions()
    assert p.shape == (5000, 3) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    for e in ds.examples[:50]:
        np.testing.assert_allclose(e.true_distribution, ORACLE.distribution(e.context, e.response))
    assert ds.label_space == SYNTHETIC_LABEL_SPACE
    assert ds.label_space.names == ("harmful", "neutral", "supportive")
    assert ds.label_space.utilities == (-1.0, 0.0, 1.0)


def test_annotations_are_consistent_and_within_bounds():
    ds = make_synthetic_dataset(500, seed=2, min_annotators=2, max_annotators=4)
    pool_ids = {a.id for a in default_annotator_pool()}
    n = ds.counts().sum(axis=1)
    assert n.min() == 2 and n.max() == 4
    for e in ds:
        who = [a for a, _ in e.annotations]
        assert len(set(who)) == len(who) and set(who) <= pool_ids
        np.testing.assert_array_equal(
            np.bincount([c for _, c in e.annotations], minlength=3), e.counts
        )
    assert (ds.report.read, ds.report.kept, ds.report.skipped) == (500, 500, 0)
    with pytest.raises(ValueError, match="exceeds the pool"):
        make_synthetic_dataset(5, max_annotators=21)


def test_default_bounds_and_pool_reused_across_seeds(big):
    ds, _ = big
    n = ds.counts().sum(axis=1)
    assert n.min() == 1 and n.max() == 7
    other = make_synthetic_dataset(300, seed=9)
    assert {a for e in other for a, _ in e.annotations} <= {a for e in ds for a, _ in e.annotations}


def test_reliable_annotators_agree_more_with_p_star(big):
    """The pool is meaningful for annotator models: experts' labels are likelier under p*."""
    ds, _ = big
    kind = {a.id: a.kind for a in default_annotator_pool()}
    support: dict[str, list[float]] = {}
    for e in ds:
        for who, label in e.annotations:
            support.setdefault(kind[who], []).append(e.true_distribution[label])
    mean = {k: np.mean(v) for k, v in support.items()}
    assert mean["expert"] > mean["average"] > mean["spammer"]
    assert mean["expert"] > mean["lenient"] and mean["expert"] > mean["harsh"]


def test_genuine_disagreement(big):
    ds, _ = big
    p = ds.true_distributions()
    h = entropy(p)
    assert np.mean(h > 0.8) > 0.25  # log 3 = 1.10: spread out for many items
    assert np.mean(p.max(axis=1) > 0.9) > 0.05  # near one-hot for some
    assert np.all(p.mean(axis=0) > 0.2)  # every class is common
    empirical = ds.counts() / ds.counts().sum(axis=1, keepdims=True)
    assert np.mean(empirical.max(axis=1) < 1) > 0.3  # annotators disagree too


def utility(response, context=CONTEXT):
    return ORACLE.utility(context, response)


def supportive(response, context=CONTEXT):
    return ORACLE.distribution(context, response)[2]


def test_oracle_empathy_raises_utility():
    base = "The chemistry final was yesterday."
    assert utility("I'm so sorry. " + base) > utility(base)
    assert utility("That sounds hard. I hear you. " + base) > utility("That sounds hard. " + base)
    assert supportive("I UNDERSTAND. " + base) > supportive(base)  # case-insensitive


def test_oracle_dismissive_lowers_utility():
    base = "The chemistry final was yesterday."
    for phrase in ("Whatever.", "Just get over it.", "It's your fault.", "Just stop."):
        assert utility(f"{phrase} {base}") < utility(base) - 0.2, phrase
    assert utility("I'm sorry you feel that way.") < utility("I'm sorry, you feel hopeless.")
    harmful = ORACLE.distribution(CONTEXT, "Whatever. Get over it, it's your own fault.")
    assert harmful.argmax() == 0 and harmful[0] > 0.9


def test_oracle_length_extremes_are_less_supportive():
    medium = "That sounds really hard, failing chemistry after all that work."
    assert utility("ok") < utility(medium)
    assert utility("") < utility(medium)
    rambling = medium + " " + " ".join(["My neighbour is renovating the kitchen again."] * 15)
    assert utility(rambling) < utility(medium)


def test_oracle_other_directions():
    base = "That sounds hard."
    assert utility(base + " How are you coping?") > utility(base)  # open question
    assert utility(base + " You should study more.") < utility(
        base + " Would it help to study together?"
    )
    assert utility(base + "!!!") < utility(base)
    assert utility("THAT SOUNDS HARD. STUDY HARDER.") < utility("That sounds hard. Study harder.")
    engaged = "Failing the chemistry final must be hard."
    off_topic = "Losing the football match must be hard."
    assert utility(engaged) > utility(off_topic)  # overlap with the user's words


def test_oracle_word_boundaries():
    assert ORACLE.explain("", "whatevers")["dismissive"] == 0
    assert ORACLE.explain("", "I hear your car")["empathy"] == 0
    assert ORACLE.explain("", "feelings matter")["empathy"] == 1
    assert ORACLE.explain("", "Whatever!")["dismissive"] == 1


def test_oracle_batch_matches_single_and_accepts_any_context_type():
    pairs = [("hi", "Hello!"), (["a", "b"], "I hear you."), (None, ""), ([], "ok")]
    batch = ORACLE.distributions(pairs)
    assert batch.shape == (4, 3)
    for row, (c, r) in zip(batch, pairs, strict=True):
        np.testing.assert_allclose(row, ORACLE.distribution(c, r))
    np.testing.assert_allclose(ORACLE.utilities(pairs), batch @ np.array([-1.0, 0.0, 1.0]))
    assert ORACLE.distributions([]).shape == (0, 3)


@settings(max_examples=60, deadline=None)
@given(context=st.text(max_size=200), response=st.text(max_size=200))
def test_oracle_accepts_any_text(context, response):
    p = ORACLE.distribution(context, response)
    assert p.shape == (3,) and np.all(np.isfinite(p)) and np.all(p >= 0)
    assert abs(p.sum() - 1) < 1e-12
    assert -1.0 <= ORACLE.utility(context, response) <= 1.0


def test_contexts_with_gold_replies():
    rows = make_synthetic_contexts(100, seed=0)
    assert rows == make_synthetic_contexts(100, seed=0)
    assert len({r["id"] for r in rows}) == 100
    gold = np.array([r["gold_utility"] for r in rows])
    np.testing.assert_allclose(gold, [ORACLE.utility(r["context"], r["gold"]) for r in rows])
    assert gold.min() > 0.5 and gold.mean() > 0.85
    assert all(isinstance(r["context"], list) and r["context"][0] for r in rows)
    other = make_synthetic_contexts(100, seed=1)
    assert len({r["context"][0] for r in other} & {r["context"][0] for r in rows}) < 5


def test_p_star_is_learnable_from_text(big):
    """Bag-of-words softmax regression on the annotators' soft labels beats the constant
    predictor on KL(p* || q) for held-out items (sparse features: doc -> word ids)."""
    ds, _ = big
    train, test = ds.examples[:3000], ds.examples[3000:4000]
    token = re.compile(r"[a-z']+|[!?]")

    def words(e):
        return {"<bias>", *token.findall(e.response.lower())} | {
            "C:" + w for w in token.findall(e.context[0].lower())
        }

    vocab = {w: k for k, w in enumerate(sorted({w for e in train for w in words(e)}))}

    def featurise(examples):  # flat word ids, and where each document starts
        ids = [[vocab[w] for w in words(e) if w in vocab] for e in examples]
        starts = np.cumsum([0] + [len(i) for i in ids[:-1]])
        return np.concatenate(ids), starts, np.repeat(np.arange(len(ids)), [len(i) for i in ids])

    def predict(weights, ids, starts):
        logits = np.add.reduceat(weights[ids], starts, axis=0)  # (N, C)
        q = np.exp(logits - logits.max(axis=1, keepdims=True))
        return q / q.sum(axis=1, keepdims=True)

    ids, starts, doc_of = featurise(train)
    counts = np.stack([e.counts for e in train]).astype(float)
    target = counts / counts.sum(axis=1, keepdims=True)  # (N, C)
    # Gradient descent, each word's step divided by its document frequency (a diagonal
    # preconditioner: plain GD crawls on rare words and diverges on frequent ones).
    frequency = np.bincount(ids, minlength=len(vocab))[:, None] + 5.0  # (V, 1)
    weights = np.zeros((len(vocab), 3))
    for _ in range(60):
        residual = (predict(weights, ids, starts) - target)[doc_of]  # (nnz, C)
        grad = np.stack([np.bincount(ids, residual[:, c], len(vocab)) for c in range(3)], 1)
        weights -= 0.05 * (grad / frequency + 1e-3 * weights)
    test_ids, test_starts, _ = featurise(test)
    q = predict(weights, test_ids, test_starts)
    p_star = np.stack([e.true_distribution for e in test])
    constant = np.broadcast_to(target.mean(axis=0), p_star.shape)

    def kl(p, r):
        return float(np.mean((p * (np.log(p) - np.log(r))).sum(axis=1)))

    assert kl(p_star, q) < 0.5 * kl(p_star, constant)  # measured: 0.15 vs 0.43
