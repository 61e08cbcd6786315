"""The generator's own ranking accuracy on held-out candidates (issue 13 item 3): by hand, the
length rule of the ranking loss, the direction the ranking loss moves it, and a tiny
calibration run that logs it before, during and after training."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bayespref.calibration import (
    CalibrationLossConfig,
    HeldOutRanking,
    calibrate,
    continuation_logprobs,
    generator_ranking_accuracy,
    held_out_candidates_path,
    margin_ranking_loss,
    read_candidates,
    sequence_scores,
)
from bayespref.calibration.ranking import generator_candidate_scores
from bayespref.data.synthetic import SyntheticOracle
from test_calibration import _fixture_model, tiny_calibration

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


# -- the metric, by hand -----------------------------------------------------------------------


def test_ranking_accuracy_by_hand():
    # context a: reference 1.0 > 0.5 = 0.5; the generator 3 > 2 > 1
    #   (0,1) concordant 1, (0,2) concordant 1, (1,2) reference tie: left out
    # context b: reference 2, 1, 3; the generator 0, 0, 5
    #   (0,1) generator tie 1/2, (0,2) 0 < 5 and 2 < 3: 1, (1,2) 0 < 5 and 1 < 3: 1
    # context c: one candidate, no pair; pairs across contexts never count
    generator = [3.0, 2.0, 1.0, 0.0, 0.0, 5.0, 100.0]
    reference = [1.0, 0.5, 0.5, 2.0, 1.0, 3.0, -100.0]
    groups = ["a", "a", "a", "b", "b", "b", "c"]
    assert generator_ranking_accuracy(generator, reference, groups) == pytest.approx(4.5 / 5)
    # the generator's order reversed: only its tie keeps credit
    flipped = [-s for s in generator]
    assert generator_ranking_accuracy(flipped, reference, groups) == pytest.approx(0.5 / 5)
    # a reference that orders nothing: no pair, nan
    assert math.isnan(generator_ranking_accuracy([1.0, 2.0], [0.3, 0.3], [0, 0]))


def test_ranking_accuracy_moves_toward_one_as_the_ranking_loss_is_minimised():
    """What the ranking loss teaches, on free scores: the generator starts with the preference
    model's order reversed (accuracy 0) and, following the loss's gradient, ends in it (1)."""
    pm_scores = torch.tensor([[0.9, 0.5, 0.1], [3.0, 2.0, 1.0]])  # (B, K), best first
    generator_scores = torch.tensor([[-3.0, -2.0, -1.0], [-0.5, -0.2, -0.1]], requires_grad=True)
    groups = [0, 0, 0, 1, 1, 1]

    def accuracy() -> float:
        return generator_ranking_accuracy(
            generator_scores.detach().flatten(), pm_scores.flatten(), groups
        )

    history = [accuracy()]
    optimizer = torch.optim.SGD([generator_scores], lr=0.5)
    for _ in range(10):
        optimizer.zero_grad()
        margin_ranking_loss(generator_scores, margin=0.1).sum().backward()
        optimizer.step()
        history.append(accuracy())
    assert history[0] == 0.0 and history[-1] == 1.0
    assert all(b >= a for a, b in zip(history, history[1:]))  # never moves away


def test_candidate_scores_follow_the_losss_length_rule():
    """P(y) = sum log p / |y|^a, the loss's own rule: the length exponent can flip the order."""
    model = _fixture_model("llama-tiny")
    prompt = [5, 6, 7]
    candidates = [[8, 9, 10, 11, 12, 13], [14]]  # 6 tokens vs 1, each token about -log V
    logprobs, mask = continuation_logprobs(model, prompt, candidates)  # (2, T)
    logprobs = logprobs.detach()
    accuracy = {}
    for a in (0.0, 1.0, 2.0):
        loss = CalibrationLossConfig(length_penalty=a)
        expected = sequence_scores(logprobs, mask, "length-normalised", a)
        got = generator_candidate_scores(model, [prompt], [candidates], loss, pad_token_id=0)
        np.testing.assert_allclose(got, expected.numpy(), rtol=1e-10)
        accuracy[a] = generator_ranking_accuracy(got, [1.0, 0.0], [0, 0])  # the long one better
    # summed log-probabilities favour the short reply; dividing by |y|^2 the long one
    assert accuracy[0.0] == 0.0 and accuracy[2.0] == 1.0
    # mean-prob is the loss's other rule
    loss = CalibrationLossConfig(scoring="mean-prob")
    got = generator_candidate_scores(model, [prompt], [candidates], loss, pad_token_id=0)
    np.testing.assert_allclose(got, sequence_scores(logprobs, mask, "mean-prob").numpy())


def test_held_out_ranking_rises_when_the_model_is_trained_on_the_ranking_loss():
    """A tiny model, hand-made candidates, the preference model's order set to the reverse of
    the generator's: accuracy 0 before; the ranking loss on these candidates raises it."""
    torch.manual_seed(0)
    model = _fixture_model("llama-tiny").float()
    prompts = [[3, 4, 5], [6, 7]]
    candidates = [[[10, 11], [12, 13, 14], [15]], [[20, 21, 22], [23], [24, 25]]]
    loss = CalibrationLossConfig(margin=0.01)
    before = generator_candidate_scores(model, prompts, candidates, loss, pad_token_id=0)
    sets = HeldOutRanking(prompts, candidates, {"pm": -before})  # (N,) the reversed order
    assert sets.num_candidates == 6 and sets.num_pairs("pm") == 6
    assert sets.evaluate(model, loss, pad_token_id=0) == {"rank_acc_pm": 0.0}

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(15):
        optimizer.zero_grad()
        for g, (prompt, continuations) in enumerate(zip(prompts, candidates)):
            order = np.argsort(before[3 * g : 3 * g + 3])  # the PM's best first: lowest before
            logprobs, mask = continuation_logprobs(model, prompt, [continuations[k] for k in order])
            scores = sequence_scores(logprobs, mask)[None]  # (1, K)
            margin_ranking_loss(scores, loss.margin).sum().backward()
        optimizer.step()
    after = sets.evaluate(model, loss, pad_token_id=0)["rank_acc_pm"]
    assert model.training  # the evaluation restored the mode
    assert after >= 5 / 6


# -- in a calibration run ----------------------------------------------------------------------


def test_calibration_logs_the_generators_ranking_accuracy_before_and_after(
    tmp_path, char_generator_dir, pm_run
):
    config = tiny_calibration(tmp_path, char_generator_dir, pm_run, "name=rank")
    calibrate(config)
    records = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 4]
    for r in evals:  # synthetic contexts: against the PM and the oracle
        assert 0.0 <= r["rank_acc_pm"] <= 1.0 and 0.0 <= r["rank_acc_oracle"] <= 1.0
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["initial_eval_rank_acc_pm"] == evals[0]["rank_acc_pm"]
    assert summary["final_eval_rank_acc_pm"] == evals[-1]["rank_acc_pm"]
    assert summary["final_eval_rank_acc_oracle"] == evals[-1]["rank_acc_oracle"]

    # the held-out contexts' candidates: searched once, cached beside the training ones
    path = held_out_candidates_path(config.candidates_path)
    assert summary["held_out_candidates"] == str(path)
    meta, rows = read_candidates(path)
    assert meta["complete"] and meta["settings"]["contexts"]["split"] == "held-out"
    _, train = read_candidates(config.candidates_path)
    assert len(rows) == 2 and not {r["id"] for r in rows} & {r["id"] for r in train}
    assert summary["held_out_candidate_count"] == sum(len(r["candidates"]) for r in rows)

    # the logged step-0 value is the base generator's accuracy, recomputed here by hand
    from bayespref.lm import load_generator

    generator = load_generator(config.generator)
    loss = config.loss
    scores = generator_candidate_scores(
        generator.model,
        [generator.prompt_ids(r["context"]) for r in rows],
        [[generator.target_ids(c["text"]) for c in r["candidates"]] for r in rows],
        loss,
        generator.pad_token_id,
    )
    groups = [r["id"] for r in rows for _ in r["candidates"]]
    pm = [c["score"] for r in rows for c in r["candidates"]]
    oracle = SyntheticOracle().utilities(
        (r["context"], c["text"]) for r in rows for c in r["candidates"]
    )
    assert evals[0]["rank_acc_pm"] == pytest.approx(generator_ranking_accuracy(scores, pm, groups))
    assert evals[0]["rank_acc_oracle"] == pytest.approx(
        generator_ranking_accuracy(scores, oracle, groups)
    )


def test_eval_ranking_off_leaves_the_run_as_before(tmp_path, char_generator_dir, pm_run):
    config = tiny_calibration(
        tmp_path,
        char_generator_dir,
        pm_run,
        "name=unranked",
        "eval_ranking=false",
        "optim.max_steps=2",
    )
    calibrate(config)
    records = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    evals = [r for r in records if r["split"] == "eval"]
    assert evals and all(set(r) == {"step", "split", "gold_nll"} for r in evals)
    assert not held_out_candidates_path(config.candidates_path).exists()
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert not any(
        k.startswith(("held_out", "initial_eval_rank", "final_eval_rank")) for k in summary
    )


def test_rescoring_carries_the_held_out_candidates_so_generation_is_paid_once(
    tmp_path, char_generator_dir, pm_run, monkeypatch
):
    """A study's flow: one generation without a PM, re-scored per PM; the held-out file is
    re-scored beside the training one, and calibrating then searches nothing."""
    from bayespref.calibration import build_candidates, rescore_candidates
    from bayespref.calibration import search as search_module

    generated = tiny_calibration(  # scorer.run null: ranked by beam score
        tmp_path, char_generator_dir, "null", f"candidates={tmp_path / 'g.jsonl'}"
    )
    source = build_candidates(generated)
    _, beams = read_candidates(held_out_candidates_path(source))
    config = tiny_calibration(tmp_path, char_generator_dir, pm_run, "name=rescored")
    rescore_candidates(config, source)
    meta, rows = read_candidates(held_out_candidates_path(config.candidates_path))
    assert meta["rescored_from"] == str(held_out_candidates_path(source))
    assert meta["settings"]["scorer"]["run"] == pm_run
    assert [sorted(c["text"] for c in r["candidates"]) for r in rows] == [
        sorted(c["text"] for c in r["candidates"]) for r in beams
    ]

    def no_search(*args, **kwargs):
        raise AssertionError("the cached candidates should have been reused")

    monkeypatch.setattr(search_module, "diverse_beam_search", no_search)
    calibrate(config)
    summary = json.loads((config.run_dir / "summary.json").read_text())
    assert summary["initial_eval_rank_acc_pm"] is not None
