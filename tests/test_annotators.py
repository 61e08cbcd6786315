"""Annotator-aware models (issue 14, METHOD section 8): the crowd mixture rule, the slots and
their fallback, the annotator loss, the perspectivist metrics, save/load, end-to-end runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bayespref.annotator_losses import annotator_nll
from bayespref.annotator_metrics import (
    class_ranks,
    perspectivist_metrics,
    wasserstein_per_item,
)
from bayespref.annotators import AnnotatorVocabulary, crowd_log_mixture, pad_rows
from bayespref.config import ConfigError, ModelConfig, load_config
from bayespref.data.schema import AnnotatedDataset, AnnotatedExample, DataError, LabelSpace
from bayespref.evaluation import encode_split, evaluate_run, evaluate_split
from bayespref.model import PreferenceModel
from bayespref.scoring import score_file
from bayespref.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

SPACE = LabelSpace(names=("bad", "good"), utilities=(0.0, 1.0))


def example(item_id: str, annotations: list[tuple[str, int]] | None, counts=None):
    if counts is None:
        counts = np.bincount([c for _, c in annotations or []], minlength=2)
    return AnnotatedExample(
        id=item_id,
        context=["hello there"],
        response=f"reply {item_id}",
        counts=np.asarray(counts, dtype=np.int64),
        annotations=annotations,
    )


def dataset(*examples: AnnotatedExample) -> AnnotatedDataset:
    return AnnotatedDataset(list(examples), SPACE, name="toy")


# -- the mixture rule ---------------------------------------------------------------------------


def test_crowd_mixture_is_the_mean_of_the_items_annotators_and_the_weighted_population():
    # slots: 0 pooled [0.5, 0.5], 1 [0.9, 0.1], 2 [0.2, 0.8]; training label shares 2/3/5 of 10
    q_slots = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]]).log()
    log_q_slots = q_slots[None].expand(3, -1, -1)  # (B=3, S=3, C=2)
    slots = pad_rows([[1, 2], [1, 1, 2], []])
    log_w = torch.tensor([0.2, 0.3, 0.5]).log()
    q = crowd_log_mixture(log_q_slots, slots, log_w).exp()
    # item 0: (0.9 + 0.2) / 2 = 0.55; item 1: (0.9 + 0.9 + 0.2) / 3 = 2/3 (repeats count);
    # item 2 (no annotator known): 0.2 * 0.5 + 0.3 * 0.9 + 0.5 * 0.2 = 0.47
    expected = torch.tensor([[0.55, 0.45], [2 / 3, 1 / 3], [0.47, 0.53]])
    assert torch.allclose(q, expected, atol=1e-6)
    population = crowd_log_mixture(log_q_slots, None, log_w).exp()
    assert torch.allclose(population, torch.tensor([[0.47, 0.53]] * 3), atol=1e-6)


def test_vocabulary_keeps_frequent_annotators_and_pools_rare_and_unseen_ones():
    data = dataset(
        example("1", [("w1", 0), ("w2", 1), ("w3", 1)]),
        example("2", [("w1", 1), ("w2", 1)]),
        example("3", [("w1", 0)]),
    )
    vocabulary = AnnotatorVocabulary.from_dataset(data, min_labels=2)
    assert vocabulary.ids == ("w1", "w2")
    assert vocabulary.label_counts == (1, 3, 2)  # pooled: w3's single label
    assert vocabulary.weights == pytest.approx([1 / 6, 3 / 6, 2 / 6])
    assert vocabulary.slots(["w2", "w3", "never-seen", "w1"]) == [2, 0, 0, 1]
    assert vocabulary.slot_name(0) == "<pooled>" and vocabulary.slot_name(2) == "w2"
    assert AnnotatorVocabulary.from_dict(json.loads(json.dumps(vocabulary.to_dict()))) == vocabulary


def test_annotator_models_refuse_training_items_without_annotator_ids():
    data = dataset(example("1", [("w1", 0)]), example("no-ids", None, counts=[1, 2]))
    with pytest.raises(DataError, match=r"item 'no-ids' has no annotator ids: annotator-aware"):
        AnnotatorVocabulary.from_dataset(data, min_labels=1)


# -- the loss ------------------------------------------------------------------------------------


def test_annotator_nll_by_hand():
    # one item, two triples: w1 (slot 1) said 0 with q_1 = [0.9, 0.1]; a rare annotator
    # (slot 0, the pooled head q_0 = [0.5, 0.5]) said 1.
    log_q_annotators = torch.tensor([[[0.9, 0.1], [0.5, 0.5]]]).log()  # (1, 2, 2)
    log_q_pooled = torch.tensor([[0.5, 0.5]]).log()
    labels = torch.tensor([[0, 1]])
    slots = torch.tensor([[1, 0]])
    # (1/2) [(-log 0.9 - log 0.5) + (-log 0.5)]: the pooled head also learns w1's label
    expected = 0.5 * (-math.log(0.9) - 2 * math.log(0.5))
    value = annotator_nll(log_q_annotators, labels, slots, log_q_pooled)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    plain = annotator_nll(log_q_annotators, labels, slots)
    assert plain.item() == pytest.approx(0.5 * (-math.log(0.9) - math.log(0.5)), rel=1e-6)
    # padding (-1) is ignored; an item without triples costs 0
    padded = annotator_nll(
        torch.cat([log_q_annotators, log_q_annotators]),
        torch.tensor([[0, -1], [-1, -1]]),
        torch.tensor([[1, -1], [-1, -1]]),
    )
    assert padded.tolist() == pytest.approx([-math.log(0.9), 0.0], rel=1e-6)


# -- the metrics ---------------------------------------------------------------------------------


def test_class_ranks_follow_utilities_and_ties_are_not_ordinal():
    assert class_ranks([0.0, 1.0, -1.0]).tolist() == [1, 2, 0]
    assert class_ranks([1.0, 1.0, 0.0]) is None


def test_wasserstein_by_hand_in_utility_order():
    t = [[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]
    q = [[0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]
    # classes in index order: F_t = [.5, 1], F_q = [0, .5] -> 1.0; [1, 1] vs [0, 0] -> 2.0
    assert wasserstein_per_item(q, t, [0, 1, 2]).tolist() == pytest.approx([1.0, 2.0])
    # MI-like utilities (0, 1, -1): order is class 2, 0, 1. Item 0: t' = [0, .5, .5],
    # q' = [.5, 0, .5]: F_t' = [0, .5], F_q' = [.5, .5] -> 0.5. Item 1: t' = [0, 1, 0],
    # q' = [1, 0, 0] -> F: [0, 1] vs [1, 1] -> 1.0
    assert wasserstein_per_item(q, t, class_ranks([0.0, 1.0, -1.0])).tolist() == pytest.approx(
        [0.5, 1.0]
    )


def test_perspectivist_metrics_by_hand():
    # three annotations on ordinal classes 0 < 1 < 2; predictions argmax 0, 2, 1
    q_annotations = [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]]
    labels = [0, 0, 2]
    majority = [0, 0, 0]  # the baseline says 0 to everyone
    results = perspectivist_metrics(q_annotations, labels, majority, np.array([0, 1, 2]))
    assert results["annotator_error"] == pytest.approx(2 / 3)  # 2nd and 3rd wrong
    assert results["annotator_error_majority"] == pytest.approx(1 / 3)  # the 3rd
    assert results["annotator_distance"] == pytest.approx((0 + 2 + 1) / 3)
    assert results["annotator_distance_majority"] == pytest.approx((0 + 0 + 2) / 3)
    categorical = perspectivist_metrics(q_annotations, labels, majority, None)
    assert set(categorical) == {"annotator_error", "annotator_error_majority"}


# -- models ---------------------------------------------------------------------------------------


def tiny_model(encoder: str, kind: str, vocabulary: AnnotatorVocabulary) -> PreferenceModel:
    torch.manual_seed(0)
    config = ModelConfig(encoder=encoder, dropout=0.0, max_length=32, kind=kind)
    return PreferenceModel.build(config, SPACE, vocabulary=vocabulary)


@pytest.mark.parametrize("kind", ["annotator-heads", "annotator-embeddings"])
def test_annotator_model_logits_are_the_log_mixture_and_survive_save_and_load(
    tmp_path, tiny_encoder_dir, kind
):
    data = dataset(
        example("1", [("w1", 0), ("w2", 1)]),
        example("2", [("w1", 1), ("w2", 1), ("w9", 0)]),
        example("3", [("w2", 0), ("w2", 1)]),
    )
    vocabulary = AnnotatorVocabulary.from_dataset(data, min_labels=2)
    model = tiny_model(tiny_encoder_dir, kind, vocabulary).eval()
    split = encode_split(model, data, alpha=0.1)
    assert split.annotator_slots == [[1, 2], [1, 2, 0], [2, 2]]
    batch = split.batch([0, 1, 2])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "response_mask")}
    with torch.no_grad():
        crowd = torch.softmax(model(**inputs, annotators=batch["annotators"]), -1)
        every = model(**inputs, slots=torch.tensor([[0, 1, 2]] * 3)).exp()  # (3, S, C)
        unknown = torch.softmax(model(**inputs), -1)
    assert torch.allclose(crowd[0], (every[0, 1] + every[0, 2]) / 2, atol=1e-5)
    assert torch.allclose(crowd[1], (every[1, 1] + every[1, 2] + every[1, 0]) / 3, atol=1e-5)
    weights = torch.tensor(vocabulary.weights, dtype=torch.float32)
    assert torch.allclose(unknown, (weights[None, :, None] * every).sum(1), atol=1e-5)

    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "preference_model.json").read_text())
    assert meta["annotators"]["ids"] == ["w1", "w2"] and meta["model"]["kind"] == kind
    loaded = PreferenceModel.load(tmp_path / "m")
    assert loaded.vocabulary == vocabulary
    with torch.no_grad():
        again = torch.softmax(loaded(**inputs, annotators=batch["annotators"]), -1)
    assert torch.allclose(again, crowd, atol=1e-6)
    results, _ = evaluate_split(loaded, split, batch_size=2)
    for key in ("soft_ce", "annotator_error", "annotator_error_majority", "wasserstein"):
        assert key in results, key


def test_config_pairs_annotator_models_with_the_annotator_loss():
    with pytest.raises(ConfigError, match=r"model.kind=annotator-heads .* set loss.name=annota"):
        load_config(None, ["model.kind=annotator-heads", "loss.name=soft"])
    with pytest.raises(ConfigError, match=r"loss.name=annotator-ce needs an annotator-aware"):
        load_config(None, ["loss.name=annotator-ce"])
    with pytest.raises(ConfigError, match=r"model.kind must be one of"):
        load_config(None, ["model.kind=heads"])


@pytest.mark.parametrize("kind", ["annotator-heads", "annotator-embeddings"])
def test_annotator_run_trains_evaluates_and_scores_end_to_end(tmp_path, tiny_encoder_dir, kind):
    config = load_config(
        None,
        [
            f"output_dir={tmp_path / 'runs'}",
            f"name={kind}",
            f"model.encoder={tiny_encoder_dir}",
            "model.max_length=48",
            f"model.kind={kind}",
            "model.min_annotator_labels=5",
            "loss.name=annotator-ce",
            "data.train={n: 64, seed: 1}",
            "data.valid={n: 24, seed: 2}",
            "optim.batch_size=8",
            "optim.epochs=1",
            "optim.lr=1e-3",
            "eval_every=4",
            "progress=false",
        ],
    )
    result = train(config)
    assert result.steps == 8
    rows = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    valid = [r for r in rows if r["split"] == "valid"]
    for key in ("loss", "soft_ce", "kl_true", "annotator_error", "annotator_error_majority"):
        assert np.isfinite(valid[-1][key]), key
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")
    evaluated = evaluate_run(str(config.run_dir))
    assert evaluated["n"] == 24 and "annotator_distance" in evaluated["model"]
    model = PreferenceModel.from_run(config.run_dir)
    q = model.predict_proba([["I failed my exam."]], ["That sounds hard."])
    assert q.shape == (1, 3) and q.sum() == pytest.approx(1.0)
    assert Path(config.run_dir / "checkpoint" / "best" / "model.safetensors").is_file()

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"context": "hi", "response": "Tell me more?"}) + "\n")
    assert score_file(config.run_dir, pairs, tmp_path / "scored.jsonl", per_annotator=True) == 1
    row = json.loads((tmp_path / "scored.jsonl").read_text())
    assert model.vocabulary is not None
    assert list(row["annotator_probs"]) == ["<pooled>", *model.vocabulary.ids]
    per_slot = np.array([list(q.values()) for q in row["annotator_probs"].values()])  # (S, C)
    population = model.vocabulary.weights @ per_slot  # unknown annotators: the weighted mixture
    assert list(row["probs"].values()) == pytest.approx(population.tolist(), abs=1e-5)


def test_per_annotator_scores_need_an_annotator_aware_run(tmp_path, pm_run):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"context": "hi", "response": "Tell me more?"}) + "\n")
    with pytest.raises(ConfigError, match=r"per-annotator predictions need a run trained with"):
        score_file(pm_run, pairs, tmp_path / "scored.jsonl", per_annotator=True)
