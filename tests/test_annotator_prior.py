"""The annotator-mixture prior (issue 14): the blend by hand, cross-fitting, an end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from bayespref.annotator_prior import annotator_mixture_prior, cross_fitted_crowd
from bayespref.config import ConfigError, load_config
from bayespref.data.priors import smoothed_prior
from bayespref.data.schema import AnnotatedDataset, AnnotatedExample, DataError, LabelSpace
from bayespref.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = LabelSpace(names=("bad", "good"), utilities=(0.0, 1.0))


def test_blend_by_hand():
    # counts (2, 0, 1), n = 3; m = (0.5, 0.25, 0.25), kappa = 1:
    # p = (2.5, 0.25, 1.25) / 4 = (0.625, 0.0625, 0.3125)
    prior = annotator_mixture_prior(np.array([[2, 0, 1]]), np.array([[0.5, 0.25, 0.25]]), 1.0)
    np.testing.assert_allclose(prior, [[0.625, 0.0625, 0.3125]])
    # kappa = 4 on one label (0, 1): (0 + 4 * 0.5, 1 + 4 * 0.5) / 5 = (0.4, 0.6)
    prior = annotator_mixture_prior(np.array([[0, 1]]), np.array([[0.5, 0.5]]), 4.0)
    np.testing.assert_allclose(prior, [[0.4, 0.6]])


def test_a_uniform_crowd_with_kappa_c_alpha_is_the_count_prior():
    counts = np.array([[3, 0, 1], [0, 0, 1], [2, 2, 2]])
    uniform = np.full(counts.shape, 1 / 3)
    np.testing.assert_allclose(
        annotator_mixture_prior(counts, uniform, 3 * 0.1), smoothed_prior(counts, 0.1)
    )


def test_blend_rejects_bad_shapes_and_strengths():
    with pytest.raises(ValueError, match="one shape"):
        annotator_mixture_prior(np.ones((2, 3)), np.ones((2, 2)) / 2, 1.0)
    with pytest.raises(ValueError, match="kappa must be > 0"):
        annotator_mixture_prior(np.ones((1, 2)), np.ones((1, 2)) / 2, 0.0)


def _two_camps(n: int, flip: int | None = None) -> tuple[np.ndarray, AnnotatedDataset]:
    """Annotator A always says bad, B always good; each item has one of them (alternating).
    ``flip``: that item's label is reversed (its annotator says the other class once)."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(n, 8)).astype(np.float32)
    examples = []
    for i in range(n):
        who = "A" if i % 2 == 0 else "B"
        label = 0 if who == "A" else 1
        if i == flip:
            label = 1 - label
        examples.append(
            AnnotatedExample(
                id=f"i{i}",
                context=[],
                response=f"r{i}",
                counts=np.bincount([label], minlength=2),
                annotations=[(who, label)],
            )
        )
    return features, AnnotatedDataset(examples, SPACE, name="two-camps")


def test_the_crowd_follows_the_items_annotators():
    features, data = _two_camps(80)
    crowd = cross_fitted_crowd(features, data, min_labels=5, seed=0, folds=4, lr=0.02, epochs=20)
    assert crowd.shape == (80, 2)
    np.testing.assert_allclose(crowd.sum(axis=1), 1.0, rtol=1e-9)
    # the features carry nothing; who labelled the item decides its crowd distribution
    assert crowd[0::2, 0].mean() > 0.8 and crowd[1::2, 1].mean() > 0.8


def test_an_items_own_labels_never_reach_its_crowd_distribution():
    """Cross-fitting: changing item 7's label changes no prediction of item 7's fold (the
    heads that predict that fold were fitted on the other folds only)."""
    features, data = _two_camps(40)
    _, flipped = _two_camps(40, flip=7)
    folds = 4
    fold_of = np.random.default_rng(3).permutation(40) % folds  # the function's split for seed 3
    same_fold = fold_of == fold_of[7]
    before = cross_fitted_crowd(features, data, min_labels=2, seed=3, folds=folds)
    after = cross_fitted_crowd(features, flipped, min_labels=2, seed=3, folds=folds)
    np.testing.assert_array_equal(before[same_fold], after[same_fold])
    assert not np.array_equal(before[~same_fold], after[~same_fold])  # those heads saw it


def test_items_without_annotator_ids_are_refused_with_their_id():
    features, data = _two_camps(10)
    data.examples[3].annotations = None
    with pytest.raises(DataError, match=r"item 'i3' has no annotator ids: data.prior=annotator"):
        cross_fitted_crowd(features, data, min_labels=1, seed=0, folds=2)


def test_config_names_the_priors():
    with pytest.raises(ConfigError, match=r"data.prior must be one of counts\|dawid-skene\|anno"):
        load_config(None, ["data.prior=mixture"])
    with pytest.raises(ConfigError, match="data.prior_strength must be > 0"):
        load_config(None, ["data.prior=annotator-mixture", "data.prior_strength=0"])


@pytest.mark.parametrize("freeze", [True, False])
def test_a_run_with_the_annotator_mixture_prior(tmp_path, tiny_encoder_dir, freeze):
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'runs'}",
            "name=mixture",
            f"model.encoder={tiny_encoder_dir}",
            "model.max_length=48",
            f"model.freeze_encoder={str(freeze).lower()}",
            "model.min_annotator_labels=3",
            "data.prior=annotator-mixture",
            "data.prior_strength=2",
            "loss.name=forward-kl",
            "loss.detach_target=true",
            "data.train={n: 48, seed: 1}",
            "data.valid={n: 16, seed: 2}",
            "optim.batch_size=8",
            "optim.epochs=1",
            "eval_every=3",
            "progress=false",
        ],
    )
    result = train(config)
    assert result.steps == 6 and np.isfinite(result.best_metrics["soft_ce"])
    saved = yaml.safe_load((config.run_dir / "config.yaml").read_text())
    assert saved["data"]["prior"] == "annotator-mixture" and saved["data"]["prior_strength"] == 2
