"""Dawid-Skene aggregation and the ``data.prior=dawid-skene`` training prior."""

from __future__ import annotations

import numpy as np
import pytest

from bayespref.config import ConfigError, load_config
from bayespref.data import AnnotatedDataset, AnnotatedExample, LabelSpace, load_synthetic
from bayespref.data.aggregation import dawid_skene, dawid_skene_prior
from bayespref.data.priors import empirical_distribution, majority_label, smoothed_prior

SPACE = LabelSpace(names=("no", "yes"), utilities=(0.0, 1.0))


def _dataset(items: list[list[tuple[str, int]] | None], counts=None) -> AnnotatedDataset:
    examples = []
    for i, pairs in enumerate(items):
        c = np.zeros(2, dtype=np.int64)
        if pairs is None:
            c = np.asarray(counts[i], dtype=np.int64)
        else:
            for _, label in pairs:
                c[label] += 1
        examples.append(AnnotatedExample(f"i{i}", [], f"r{i}", c, pairs))
    return AnnotatedDataset(examples, SPACE, name="toy")


def test_reliable_annotator_breaks_a_tie():
    # A and B always agree (reliable); C always says the opposite of them. On the last item A
    # and C disagree (a 1-1 tie for majority vote): DS trusts A, and C's "1" is itself
    # evidence for class 0 because C's confusion matrix is learnt to be flipped.
    items = [[("A", y), ("B", y), ("C", 1 - y)] for y in (0, 1, 0, 1, 0, 1, 1, 0)]
    items.append([("A", 0), ("C", 1)])
    posterior = dawid_skene(_dataset(items))
    assert posterior.shape == (9, 2)
    np.testing.assert_allclose(posterior.sum(axis=1), 1.0)
    assert posterior[-1, 0] > 0.99
    # every unanimous-by-A-and-B item follows A and B
    for i, pairs in enumerate(items[:-1]):
        assert posterior[i].argmax() == pairs[0][1]


def test_single_em_step_by_hand():
    # One annotator, two items labelled 0 and 1; smoothing 0. Initial T = one-hot counts, so
    # pi = (1/2, 1/2) and theta = identity; the E step gives T back unchanged.
    posterior = dawid_skene(_dataset([[("a", 0)], [("a", 1)]]), max_iter=1, smoothing=0.0)
    np.testing.assert_allclose(posterior, [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)


def test_smoothing_by_hand():
    # Same data with smoothing s = 1: pi = (1+1)/(2+2) = 1/2; theta[c, l] = (1[c=l] + 1)/(1 + 2)
    # = 2/3 on the diagonal, 1/3 off it. E step: T0 ∝ (1/2 * 2/3, 1/2 * 1/3) = (2/3, 1/3).
    posterior = dawid_skene(_dataset([[("a", 0)], [("a", 1)]]), max_iter=1, smoothing=1.0)
    np.testing.assert_allclose(posterior, [[2 / 3, 1 / 3], [1 / 3, 2 / 3]], atol=1e-12)


def test_items_without_ids_keep_their_counts():
    counts = [[2, 1], [0, 3], [1, 1]]
    dataset = _dataset([None, None, None], counts)
    np.testing.assert_allclose(dawid_skene(dataset), empirical_distribution(np.asarray(counts)))
    # with no ids, the DS prior is exactly the count prior
    np.testing.assert_allclose(
        dawid_skene_prior(dataset, alpha=0.1), smoothed_prior(np.asarray(counts), 0.1)
    )


def test_mixed_items_with_and_without_ids():
    items = [[("A", 0), ("B", 0)], None, [("A", 1), ("B", 1)]]
    posterior = dawid_skene(_dataset(items, counts=[None, [1, 2], None]))
    np.testing.assert_allclose(posterior[1], [1 / 3, 2 / 3])


def test_prior_formula_by_hand():
    # (n T + alpha) / (n + C alpha) for one item with 3 unanimous labels from three annotators
    # seen elsewhere; posterior ~ (1, 0) -> p = (3 + 0.5, 0.5) / 4 = (0.875, 0.125).
    items = [[("A", 0), ("B", 0), ("C", 0)]] * 3 + [[("A", 1), ("B", 1), ("C", 1)]] * 3
    prior = dawid_skene_prior(_dataset(items), alpha=0.5)
    np.testing.assert_allclose(prior[0], [0.875, 0.125], atol=1e-3)
    np.testing.assert_allclose(prior.sum(axis=1), 1.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_beats_majority_vote_on_synthetic(seed):
    """The simulated pool has experts, biased annotators and a spammer: weighting them by
    their estimated reliability recovers argmax p* more often than majority vote."""
    dataset = load_synthetic(n=1000, seed=seed)
    truth = dataset.true_distributions().argmax(axis=1)
    counts = dataset.counts()
    space = dataset.label_space
    majority = majority_label(counts, space.utilities, space.tie_break)
    posterior = dawid_skene(dataset)
    np.testing.assert_allclose(posterior.sum(axis=1), 1.0)
    ds_agree = (posterior.argmax(axis=1) == truth).mean()
    majority_agree = (majority == truth).mean()
    assert ds_agree > majority_agree + 0.01, (ds_agree, majority_agree)


def test_config_validates_prior():
    assert load_config(None, ["data.prior=dawid-skene"]).data.prior == "dawid-skene"
    with pytest.raises(ConfigError, match="data.prior"):
        load_config(None, ["data.prior=votes"])


def test_training_uses_the_ds_prior_and_raw_targets(tiny_encoder_dir, tmp_path):
    from bayespref.data.splits import load_train_valid, training_prior
    from bayespref.evaluation import encode_split
    from bayespref.model import PreferenceModel
    from bayespref.train import train

    config = load_config(
        "configs/synthetic.yaml",
        [
            f"model.encoder={tiny_encoder_dir}",
            "model.max_length=32",
            "data.train={n: 48, seed: 1}",
            "data.valid={n: 16, seed: 2}",
            "data.prior=dawid-skene",
            "loss.name=soft",
            "optim.max_steps=2",
            "eval_every=2",
            "progress=false",
            f"output_dir={tmp_path}",
        ],
    )
    train_set, _ = load_train_valid(config.data, config.seed)
    prior = training_prior(train_set, config.data)
    np.testing.assert_allclose(prior, dawid_skene_prior(train_set, config.data.alpha))
    model = PreferenceModel.build(config.model, train_set.label_space)
    split = encode_split(model, train_set, config.data.alpha, prior=prior)
    np.testing.assert_allclose(split.prior, prior, rtol=1e-6)
    assert not np.allclose(split.prior, smoothed_prior(train_set.counts(), config.data.alpha))
    np.testing.assert_allclose(split.empirical, empirical_distribution(train_set.counts()))
    result = train(config)
    assert (result.run_dir / "summary.json").is_file()
