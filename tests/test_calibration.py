"""Generator calibration: hand-derived losses, shared-context == naive forward, the candidate
cache, bad inputs, and tiny end-to-end generate + calibrate + resume runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bayespref import calibration
from bayespref import trainer as trainer_module
from bayespref.calibration import (
    CalibrationConfig,
    CalibrationLossConfig,
    CandidateCacheError,
    EncodedExample,
    build_candidates,
    calibrate,
    calibration_loss,
    continuation_logprobs,
    dedupe_and_rank,
    example_loss,
    gold_margin_loss,
    margin_ranking_loss,
    read_candidates,
    sequence_scores,
    token_nll,
)
from bayespref.calibration import forward as forward_module
from bayespref.calibration import search as search_module
from bayespref.config import ConfigError, load_yaml
from bayespref.data.contexts import convabuse_contexts, read_context_jsonl
from bayespref.data.schema import DataError
from bayespref.safety import RunExistsError

FIXTURES = Path(__file__).parent / "fixtures" / "dbs"


def load_calibration(path=None, overrides=()) -> CalibrationConfig:
    return load_yaml(CalibrationConfig, path, list(overrides))


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


# -- losses, by hand ---------------------------------------------------------------------------


def test_sequence_scores_length_normalised_and_mean_prob():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, 99.0]])  # 99: padding
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    expected = torch.tensor([-6.0 / 3, -2.0 / 2])
    torch.testing.assert_close(sequence_scores(logprobs, mask), expected)
    # length penalty a: sum / |y|^a
    expected = torch.tensor([-6.0 / 3**2, -2.0 / 2**2])
    torch.testing.assert_close(sequence_scores(logprobs, mask, length_penalty=2.0), expected)
    # the reference code's mean token probability
    e = torch.exp
    expected = torch.stack(
        [
            (e(torch.tensor(-1.0)) + e(torch.tensor(-2.0)) + e(torch.tensor(-3.0))) / 3,
            (e(torch.tensor(-0.5)) + e(torch.tensor(-1.5))) / 2,
        ]
    )
    torch.testing.assert_close(sequence_scores(logprobs, mask, "mean-prob"), expected)


def test_token_nll_averages_over_real_tokens():
    logprobs = torch.tensor([[-1.0, -3.0, 0.0], [-2.0, -7.0, -7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(token_nll(logprobs, mask), torch.tensor([2.0, 16.0 / 3]))


def test_margin_ranking_loss_by_hand():
    # best -> worst by the preference model; the generator prefers the second
    scores = torch.tensor([[-1.0, -0.5, -2.0]])
    margin = 0.1
    # (0,1): max(0, -0.5 - -1.0 + 0.1) = 0.6; (0,2): max(0, -2 + 1 + 0.2) = 0;
    # (1,2): max(0, -2 + 0.5 + 0.1) = 0
    torch.testing.assert_close(margin_ranking_loss(scores, margin), torch.tensor([0.6]))
    # the margin grows with the distance in the ranking: (0,2) pays 2 * margin
    scores = torch.tensor([[0.0, 0.0, 0.0]])
    torch.testing.assert_close(margin_ranking_loss(scores, 0.5), torch.tensor([0.5 + 1.0 + 0.5]))
    # well separated in the right order: no loss
    assert margin_ranking_loss(torch.tensor([[-1.0, -2.0, -3.0]]), 0.1).item() == 0.0


def test_margin_ranking_loss_ignores_padded_candidates():
    scores = torch.tensor([[-1.0, -3.0, 5.0], [-1.0, -0.5, 7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # row 0: (0,1) max(0, -3 + 1 + 0.1) = 0; row 1: (0,1) 0.6; the padded 5 and 7 count nowhere
    torch.testing.assert_close(margin_ranking_loss(scores, 0.1, mask), torch.tensor([0.0, 0.6]))


def test_gold_margin_loss_by_hand():
    scores = torch.tensor([[-1.0, -2.0, 9.0]])
    mask = torch.tensor([[1, 1, 0]])
    gold = torch.tensor([-1.5])
    # max(0, -1 + 1.5 + 0.2) = 0.7; max(0, -2 + 1.5 + 0.2) = 0; padding ignored
    torch.testing.assert_close(gold_margin_loss(scores, gold, 0.2, mask), torch.tensor([0.7]))


def test_calibration_loss_combines_the_weighted_terms():
    gold_lp = torch.tensor([[-1.0, -2.0]])  # NLL 1.5, P(gold) = -1.5
    gold_mask = torch.ones(1, 2)
    cand_lp = torch.tensor([[[-2.0, -2.0], [-1.0, 0.0]]])  # P = -2, -0.5 (wrong order)
    cand_mask = torch.tensor([[[1, 1], [1, 0]]])
    present = torch.ones(1, 2)
    config = CalibrationLossConfig(
        margin=0.1, rank_weight=2.0, mle_weight=0.5, gold_weight=3.0, gold_margin=0.0
    )
    terms = calibration_loss(gold_lp, gold_mask, cand_lp, cand_mask, present, config)
    rank = -1.0 + 2.0 + 0.1  # max(0, P_1 - P_0 + 0.1)
    gold = 0.0 + (-1.0 + 1.5)  # max(0, -2 + 1.5) + max(0, -1 + 1.5)
    torch.testing.assert_close(terms["rank"], torch.tensor([rank]))
    torch.testing.assert_close(terms["mle"], torch.tensor([1.5]))
    torch.testing.assert_close(terms["gold"], torch.tensor([gold]))
    torch.testing.assert_close(terms["loss"], torch.tensor([0.5 * 1.5 + 2.0 * rank + 3.0 * gold]))


# -- the forward: shared context == naive ------------------------------------------------------


def _fixture_model(name: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        FIXTURES / name, use_safetensors=True, attn_implementation="eager"
    )
    return model.double().eval()  # eval: no dropout, so both paths see the same function


@pytest.mark.parametrize("name", ["llama-tiny", "gpt2-tiny"])
def test_shared_context_forward_equals_naive_in_values_and_gradients(name):
    model = _fixture_model(name)
    g = torch.Generator().manual_seed(0)
    V = model.config.vocab_size
    prompt = torch.randint(3, V, (9,), generator=g).tolist()
    conts = [torch.randint(3, V, (n,), generator=g).tolist() for n in (6, 2, 5, 1)]
    example = EncodedExample(prompt=prompt, gold=conts[0], candidates=conts[1:])
    config = CalibrationLossConfig(margin=0.05, gold_weight=1.0, gold_margin=0.01)

    results = {}
    for forward in ("naive", "shared-context"):
        model.zero_grad(set_to_none=True)
        logprobs, mask = continuation_logprobs(
            model, prompt, conts, shared_context=forward == "shared-context", pad_token_id=2
        )
        terms = example_loss(model, example, config, pad_token_id=2, forward=forward)
        terms["loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[forward] = (logprobs.detach(), mask, terms, grads)

    (lp_a, mask_a, terms_a, grads_a), (lp_b, mask_b, terms_b, grads_b) = results.values()
    assert torch.equal(mask_a, mask_b)
    assert mask_a.sum(-1).tolist() == [6, 2, 5, 1]
    assert (lp_a[mask_a == 0] == 0).all() and (lp_a[mask_a == 1] < 0).all()
    torch.testing.assert_close(lp_a, lp_b, rtol=0, atol=1e-10)
    for key in terms_a:
        torch.testing.assert_close(terms_a[key], terms_b[key], rtol=0, atol=1e-5)
    assert terms_a["rank"] > 0  # the comparison exercises the ranking term
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 4
    for key in grads_a:
        torch.testing.assert_close(grads_a[key], grads_b[key], rtol=0, atol=1e-5)


def test_gold_mle_only_forwards_the_gold_reply_alone_with_the_full_paths_loss_and_gradient(
    monkeypatch,
):
    """rank_weight = gold_weight = 0 (the study's MLE-only control): the candidates cannot
    matter, so they are not forwarded; loss and gradients equal the full computation."""
    model = _fixture_model("llama-tiny")
    g = torch.Generator().manual_seed(1)
    V = model.config.vocab_size
    prompt = torch.randint(3, V, (7,), generator=g).tolist()
    conts = [torch.randint(3, V, (n,), generator=g).tolist() for n in (5, 3, 4)]
    example = EncodedExample(prompt=prompt, gold=conts[0], candidates=conts[1:])
    config = CalibrationLossConfig(rank_weight=0.0, gold_weight=0.0, mle_weight=0.7)

    model.zero_grad(set_to_none=True)
    logprobs, mask = continuation_logprobs(
        model, prompt, conts, shared_context=False, pad_token_id=2
    )
    present = torch.ones((1, 2), dtype=torch.long)
    full = calibration_loss(
        logprobs[:1], mask[:1], logprobs[None, 1:], mask[None, 1:], present, config
    )
    full["loss"][0].backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    forwarded = []
    real = forward_module.continuation_logprobs

    def counting(model, context, continuations, **kwargs):
        forwarded.append(len(continuations))
        return real(model, context, continuations, **kwargs)

    monkeypatch.setattr(forward_module, "continuation_logprobs", counting)
    model.zero_grad(set_to_none=True)
    terms = example_loss(model, example, config, pad_token_id=2)
    terms["loss"].backward()
    assert forwarded == [1]
    torch.testing.assert_close(terms["loss"], full["loss"][0], rtol=0, atol=1e-10)
    torch.testing.assert_close(terms["mle"], full["mle"][0], rtol=0, atol=1e-10)
    assert terms["rank"] == 0 and terms["gold"] == 0
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == full_grads.keys() and len(grads) > 4
    for key in grads:
        torch.testing.assert_close(grads[key], full_grads[key], rtol=0, atol=1e-10)


class _CharIds:
    """A stand-in generator for encode_example: token ids are character codes."""

    def prompt_ids(self, context):
        return [ord(c) for c in (context if isinstance(context, str) else " ".join(context))]

    def target_ids(self, text):
        return [ord(c) for c in text]


def test_encode_example_trains_on_the_reference_or_on_the_top_candidate():
    row = {
        "id": "c1",
        "context": "hi",
        "gold": "ref",
        "candidates": [{"text": "best"}, {"text": "worse"}],
    }
    ids = _CharIds()
    by_reference = calibration.encode_example(ids, row)
    assert by_reference.gold == ids.target_ids("ref")
    top = calibration.encode_example(ids, row, "top-candidate")
    assert top.gold == ids.target_ids("best")  # the scorer's pick is the MLE target ...
    assert top.candidates == [ids.target_ids("best"), ids.target_ids("worse")]  # ... and ranked
    assert top.prompt == by_reference.prompt
    # a context without a reference trains only on its top candidate
    no_gold = {**row, "gold": None}
    assert calibration.encode_example(ids, no_gold, "top-candidate").gold == top.gold
    with pytest.raises(ValueError, match="'c1' has no reference reply.*top-candidate"):
        calibration.encode_example(ids, no_gold)
    with pytest.raises(ValueError, match="'c1' has no candidates"):
        calibration.encode_example(ids, {**row, "candidates": []}, "top-candidate")
    with pytest.raises(ConfigError, match="loss.mle_target must be one of"):
        CalibrationLossConfig(mle_target="gold")


def test_term_gradients_split_the_steps_gradient_into_its_mle_and_ranking_parts():
    """Hand check: each term's gradient by backward apart, summed over the contexts; their
    sum is the whole loss's gradient; nothing is left in .grad."""
    model = _fixture_model("llama-tiny")
    g = torch.Generator().manual_seed(3)
    V = model.config.vocab_size

    def seqs(*lengths):
        return [torch.randint(3, V, (n,), generator=g).tolist() for n in lengths]

    examples = [
        EncodedExample(prompt=seqs(6)[0], gold=seqs(4)[0], candidates=seqs(5, 3, 4)),
        EncodedExample(prompt=seqs(5)[0], gold=seqs(3)[0], candidates=seqs(2, 6, 4)),
    ]
    loss = CalibrationLossConfig(rank_weight=2.0, mle_weight=0.5, margin=0.05)
    params = [p for n, p in model.named_parameters() if "q_proj" in n]

    def by_backward(term: str) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        total = sum(example_loss(model, ex, loss, pad_token_id=2)[term] for ex in examples)
        total.backward()
        grad = torch.cat([p.grad.flatten().double() for p in params])
        model.zero_grad(set_to_none=True)
        return grad

    g_mle, g_rank, g_all = 0.5 * by_backward("mle"), 2.0 * by_backward("rank"), by_backward("loss")
    torch.testing.assert_close(g_mle + g_rank, g_all, rtol=1e-4, atol=1e-5)  # float32 sums
    split = calibration.term_gradients(model, examples, loss, params, pad_token_id=2)
    assert all(p.grad is None for p in model.parameters())
    assert split["grad_norm_mle"] == pytest.approx(float(g_mle.norm()), rel=1e-5)
    assert split["grad_norm_rank"] == pytest.approx(float(g_rank.norm()), rel=1e-5)
    cosine = float(g_rank @ g_mle / (g_rank.norm() * g_mle.norm()))
    assert split["grad_cos_rank_mle"] == pytest.approx(cosine, rel=1e-4, abs=1e-6)
    assert split["grad_norm_rank"] > 0
    with pytest.raises(ValueError, match="rank_weight > 0"):
        calibration.term_gradients(
            model, examples, CalibrationLossConfig(rank_weight=0.0), params, pad_token_id=2
        )


@pytest.mark.parametrize("shared", [True, False])
def test_continuation_logprobs_match_a_plain_full_sequence_forward(shared):
    """Independent check of what both paths compute: log p(y_t | context, y_<t)."""
    model = _fixture_model("llama-tiny")
    prompt, cont = [5, 9, 17, 33], [40, 41, 42]
    logprobs, _ = continuation_logprobs(model, prompt, [cont, [7]], shared_context=shared)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + cont])).logits[0]  # (T, V)
    full = torch.log_softmax(logits, -1)
    expected = torch.stack([full[len(prompt) - 1 + t, tok] for t, tok in enumerate(cont)])
    torch.testing.assert_close(logprobs[0].detach(), expected, rtol=0, atol=1e-10)


# -- candidates: dedupe and ranking ------------------------------------------------------------


def test_dedupe_keeps_identical_texts_once_with_a_count_best_first():
    ranked = dedupe_and_rank(["a", "b", "a", "c", "d"], [0.1, 0.5, 0.1, 0.3, 0.3])
    assert ranked == [
        {"text": "b", "score": 0.5, "count": 1},
        {"text": "c", "score": 0.3, "count": 1},  # equal scores keep the search's order
        {"text": "d", "score": 0.3, "count": 1},
        {"text": "a", "score": 0.1, "count": 2},
    ]


# -- config and inputs -------------------------------------------------------------------------


def test_config_overrides_and_validation():
    config = load_calibration(
        None, ["decoding.num_beams=6", "decoding.num_beam_groups=3", "loss.margin=0.01"]
    )
    assert config.decoding.num_beams == 6 and config.loss.margin == 0.01
    assert config.forward == "shared-context" and config.generator.name == "smollm2-135m-instruct"
    with pytest.raises(ConfigError, match="unknown config key"):
        load_calibration(None, ["loss.margn=0.1"])
    with pytest.raises(ConfigError, match="divisible"):
        load_calibration(None, ["decoding.num_beams=4", "decoding.num_beam_groups=3"])
    with pytest.raises(ConfigError, match="forward"):
        load_calibration(None, ["forward=fast"])
    with pytest.raises(ConfigError, match="data.path"):
        load_calibration(None, ["data.source=jsonl"])
    with pytest.raises(ConfigError, match="scoring"):
        load_calibration(None, ["loss.scoring=prob"])


def test_config_shares_the_run_optim_peft_and_decoding_sections():
    config = load_calibration()
    # calibration's own defaults of the shared sections
    assert (config.name, config.optim.lr, config.optim.batch_size) == ("calibrate", 1e-5, 2)
    assert (config.optim.grad_accum, config.optim.weight_decay) == (4, 0.0)
    assert (config.decoding.method, config.decoding.num_beams) == ("diverse-beam", 4)
    assert (config.decoding.num_beam_groups, config.decoding.min_new_tokens) == (4, 10)
    assert (
        config.candidates is None and config.candidates_path == config.run_dir / "candidates.jsonl"
    )
    assert load_calibration(None, ["candidates=c.jsonl"]).candidates_path == Path("c.jsonl")
    assert load_calibration(None, ["eval_every=0"]).eval_every == 0  # once per epoch
    with pytest.raises(ConfigError, match="decoding.cache was moved: use candidates="):
        load_calibration(None, ["decoding.cache=c.jsonl"])
    with pytest.raises(ConfigError, match="decoding.method must be diverse-beam"):
        load_calibration(None, ["decoding.method=greedy"])
    with pytest.raises(ConfigError, match=r"peft.method must be none\|lora"):
        load_calibration(None, ["peft.method=prefix"])


def test_shipped_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    for name in ("calibrate-synthetic.yaml", "calibrate-convabuse.yaml"):
        config = load_calibration(root / name)
        assert config.scorer.run


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"id": 1, "context": "hi", "gold": "hello"', "not valid JSON"),
        ('{"id": 1, "context": "hi"}', "missing key 'gold'"),
        ('{"id": 1, "context": [], "gold": "x"}', "non-empty list"),
        ('{"id": 1, "context": 5, "gold": "x"}', "string or a list"),
        ('{"id": 1, "context": "hi", "gold": ""}', "'gold' must be"),
        ('{"id": "a", "context": "hi", "gold": "x"}', "duplicate id"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_context_jsonl_names_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "contexts.jsonl"
    path.write_text('{"id": "a", "context": ["hi", "there"], "gold": "ok"}\n' + line + "\n")
    with pytest.raises(DataError, match=problem) as err:
        read_context_jsonl(path, require_gold=True)
    assert err.value.line == 2 and err.value.path == str(path)


def test_context_jsonl_accepts_strings_and_turn_lists(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": 7, "context": "hi", "gold": "hello"}\n\n'
        '{"id": "b", "context": ["a", "b"], "gold": "c", "extra": 1}\n'
    )
    rows = read_context_jsonl(path, require_gold=True)
    assert rows == [
        {"id": "7", "context": "hi", "gold": "hello"},
        {"id": "b", "context": ["a", "b"], "gold": "c"},
    ]


@pytest.mark.shared
def test_convabuse_contexts_keep_non_abusive_items_with_the_user_turn_as_gold():
    from bayespref.data.convabuse import load_convabuse
    from conftest import shared_data

    path = shared_data("convabuse", "ConvAbuseEMNLPvalid.csv")
    rows = convabuse_contexts(path)
    dataset = load_convabuse(path, label_scheme="binary")
    by_id = {ex.id: ex for ex in dataset.examples}
    assert 0 < len(rows) < len(dataset)
    for row in rows[:50]:
        ex = by_id[row["id"]]
        assert ex.counts[0] > ex.counts[1]  # the majority found no abuse
        assert row["gold"] == ex.response and row["context"] == list(ex.context)


# -- end to end with tiny models ---------------------------------------------------------------


def tiny_calibration(tmp_path: Path, generator: str, pm: str, *overrides: str):
    base = [
        f"output_dir={tmp_path / 'runs'}",
        "name=cal",
        f"generator.name={generator}",
        "generator.max_context_tokens=40",
        "generator.max_target_tokens=12",
        "data.n=10",
        "data.n_eval=2",
        f"scorer.run={pm}",
        "decoding.num_beams=4",
        "decoding.num_beam_groups=2",
        "decoding.max_new_tokens=6",
        "decoding.min_new_tokens=2",
        "decoding.batch_size=3",
        f"candidates={tmp_path / 'candidates.jsonl'}",
        "optim.batch_size=2",
        "optim.grad_accum=2",
        "optim.max_steps=4",
        "optim.lr=1e-3",
        "optim.warmup_ratio=0.25",
        "eval_every=2",
        "progress=false",
    ]
    return load_calibration(None, base + list(overrides))


def assert_same_candidates(rows: list[dict], expected: list[dict]) -> None:
    """The same contexts, texts and counts exactly; scores to float tolerance.

    A resumed search scores in other batch compositions, so the last digits of a score
    depend on the CPU's float kernels; a byte comparison of the file would too."""
    assert len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        for key in ("id", "context", "gold", "num_generated", "num_unique"):
            assert row[key] == want[key]
        got = {c["text"]: (c["count"], c["score"]) for c in row["candidates"]}
        wanted = {c["text"]: (c["count"], c["score"]) for c in want["candidates"]}
        assert got.keys() == wanted.keys()
        for text, (count, score) in wanted.items():
            assert got[text][0] == count
            assert got[text][1] == pytest.approx(score, rel=1e-5, abs=1e-6)


def test_candidates_are_built_ranked_cached_and_resumed(
    tmp_path, char_generator_dir, pm_run, monkeypatch
):
    config = tiny_calibration(tmp_path, char_generator_dir, pm_run)
    path = build_candidates(config)
    meta, rows = read_candidates(path)
    assert meta["complete"] and meta["num_contexts"] == len(rows) == 8  # 10 - 2 held out
    settings = meta["settings"]
    assert settings["scorer"]["rule"] == "expected-utility"
    assert settings["decoding"]["num_beams"] == 4 and settings["generator"]["name"]
    for row in rows:
        assert set(row) == {"id", "context", "gold", "candidates", "num_generated", "num_unique"}
        scores = [c["score"] for c in row["candidates"]]
        assert scores == sorted(scores, reverse=True)
        assert sum(c["count"] for c in row["candidates"]) == row["num_generated"] == 4
        assert (
            row["num_unique"]
            == len(row["candidates"])
            == len({c["text"] for c in row["candidates"]})
        )
    full = path.read_bytes()  # the interrupted file below is cut from it

    # same settings: reused without searching
    def no_search(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(search_module, "diverse_beam_search", no_search)
    assert build_candidates(config) == path
    monkeypatch.undo()

    # interrupted after two contexts, mid-way through the third line: resumed to the same file
    lines = full.split(b"\n")
    path.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:25])
    meta_path = calibration.candidates_meta_path(path)
    meta_path.write_text(json.dumps({"settings": settings, "complete": False}))
    build_candidates(config)
    resumed_meta, resumed_rows = read_candidates(path)
    assert resumed_meta["complete"]
    assert_same_candidates(resumed_rows, rows)

    # other settings: refused, naming the difference
    other = tiny_calibration(tmp_path, char_generator_dir, pm_run, "decoding.diversity_penalty=2.0")
    with pytest.raises(CandidateCacheError, match="diversity_penalty"):
        build_candidates(other)

    # a corrupt line in the middle is an error with the file and line
    path.write_bytes(b"\n".join(lines[:1] + [b'{"id": 3}'] + lines[2:]))
    with pytest.raises(DataError, match="candidates.jsonl:2: not a candidate row"):
        read_candidates(path)


def _generator_weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "generator" / "model.safetensors"))


def test_calibrate_end_to_end_then_an_interrupted_run_resumes_to_the_same_weights(
    tmp_path, char_generator_dir, pm_run, monkeypatch
):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = tiny_calibration(tmp_path, char_generator_dir, pm_run, "name=full", "save_every=2")
    result = calibrate(config)
    assert result.steps == 4 and result.eval_gold_nll is not None
    run = config.run_dir
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    train_rows = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert all({"loss", "rank", "mle", "lr"} <= set(r) for r in train_rows)
    assert [r["step"] for r in records if r["split"] == "eval"] == [0, 2, 4]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["base_generator"]["name"] == char_generator_dir
    assert (run / "config.yaml").is_file()
    # a plain Hugging Face folder, and training changed the weights
    model = AutoModelForCausalLM.from_pretrained(run / "generator")
    AutoTokenizer.from_pretrained(run / "generator")
    base = AutoModelForCausalLM.from_pretrained(char_generator_dir)
    moved = sum(
        float((a - b).abs().sum())
        for a, b in zip(model.state_dict().values(), base.state_dict().values())
    )
    assert moved > 0
    with pytest.raises(RunExistsError, match="--resume"):
        calibrate(config)

    # the same run, killed during step 3 (after the step-2 checkpoint), then resumed
    config = tiny_calibration(tmp_path, char_generator_dir, pm_run, "name=resumed", "save_every=2")

    def crash_at_step_3(step, *args):
        if step == 2:
            raise KeyboardInterrupt
        return calibration_lr_at(step, *args)

    calibration_lr_at = trainer_module.lr_at
    monkeypatch.setattr(trainer_module, "lr_at", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        calibrate(config)
    monkeypatch.undo()
    assert not (config.run_dir / "generator").exists()
    calibrate(config, resume=True)
    records = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
    full, resumed = _generator_weights(run), _generator_weights(config.run_dir)
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=1e-6, atol=1e-7)


def test_calibration_without_references_trains_on_the_top_candidates(
    tmp_path, char_generator_dir, pm_run
):
    """Contexts with no reference reply: loss.mle_target=top-candidate trains the MLE term on
    the preference model's pick; the default (reference) refuses the file in one line."""
    contexts = tmp_path / "prompts.jsonl"
    contexts.write_text(
        "".join(json.dumps({"id": f"p{i}", "context": f"hello {i}"}) + "\n" for i in range(8))
    )
    data = ["data.source=jsonl", f"data.path={contexts}", "data.n_eval=0", "eval_ranking=false"]
    config = tiny_calibration(
        tmp_path, char_generator_dir, pm_run, "name=prompts", "loss.mle_target=top-candidate",
        "loss.rank_weight=0", *data, "optim.max_steps=2",
    )  # fmt: skip
    result = calibrate(config)
    assert result.steps == 2 and result.eval_gold_nll is None
    records = [json.loads(line) for line in (config.run_dir / "metrics.jsonl").open()]
    train_rows = [r for r in records if r["split"] == "train"]
    assert len(train_rows) == 2 and all(r["mle"] > 0 and r["rank"] == 0 for r in train_rows)

    with pytest.raises(DataError, match="prompts.jsonl:1: missing key 'gold'"):
        calibrate(tiny_calibration(tmp_path, char_generator_dir, pm_run, "name=refs", *data))


def test_lora_calibration_saves_a_merged_plain_model(tmp_path, char_generator_dir, pm_run):
    from transformers import AutoModelForCausalLM

    config = tiny_calibration(
        tmp_path,
        char_generator_dir,
        pm_run,
        "name=lora",
        "peft.method=lora",
        "peft.r=4",
        "peft.target_modules=[q_proj, v_proj]",
        "optim.max_steps=2",
        "forward=naive",
        "loss.gold_weight=1.0",
        "loss.scoring=mean-prob",
    )
    result = calibrate(config)
    saved = _generator_weights(config.run_dir)
    assert not any("lora" in k for k in saved)
    model = AutoModelForCausalLM.from_pretrained(result.generator_dir)
    base = AutoModelForCausalLM.from_pretrained(char_generator_dir)
    q_moved = (
        (
            model.model.layers[0].self_attn.q_proj.weight
            - base.model.layers[0].self_attn.q_proj.weight
        )
        .abs()
        .sum()
    )
    k_moved = (
        (
            model.model.layers[0].self_attn.k_proj.weight
            - base.model.layers[0].self_attn.k_proj.weight
        )
        .abs()
        .sum()
    )
    assert q_moved > 0 and k_moved == 0  # only the LoRA targets changed


def test_cli_generate_and_bad_config(tmp_path, char_generator_dir, pm_run, capsys):
    from bayespref.cli import main

    config = tiny_calibration(tmp_path, char_generator_dir, pm_run)
    path = tmp_path / "c.yaml"
    from bayespref.config import save_config

    save_config(config, path)
    assert main(["generate", "--config", str(path), "data.n=6"]) == 0
    assert "contexts" in capsys.readouterr().out
    assert main(["calibrate", "--config", str(path), "loss.nope=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err


def test_two_process_generate_writes_the_single_process_file(tmp_path, char_generator_dir, pm_run):
    """`generate` under torchrun: each process searches a share of the contexts; the merged
    file holds what one process writes, in the same order."""
    import os
    import subprocess
    import sys

    from test_distributed import TORCHRUN

    if TORCHRUN is None:
        pytest.skip("torchrun not found beside the Python interpreter")

    def overrides(folder: Path) -> list[str]:
        config = tiny_calibration(folder, char_generator_dir, pm_run)
        return [
            f"output_dir={config.output_dir}", "name=cal", f"generator.name={char_generator_dir}",
            "generator.max_context_tokens=40", "generator.max_target_tokens=12", "data.n=10",
            "data.n_eval=2", f"scorer.run={pm_run}", "decoding.num_beams=4",
            "decoding.num_beam_groups=2", "decoding.max_new_tokens=6", "decoding.min_new_tokens=2",
            "decoding.batch_size=3", f"candidates={folder / 'candidates.jsonl'}",
            "progress=false",
        ]  # fmt: skip

    env = dict(os.environ, OMP_NUM_THREADS="1")
    one, two = tmp_path / "one", tmp_path / "two"
    for folder, launcher in ((one, [sys.executable]), (two, [TORCHRUN, "--nproc_per_node", "2"])):
        folder.mkdir()
        proc = subprocess.run(
            [*launcher, "-m", "bayespref.cli", "generate", *overrides(folder)],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    meta, single = read_candidates(one / "candidates.jsonl")
    meta_two, parallel = read_candidates(two / "candidates.jsonl")
    assert meta_two["complete"] and meta_two["settings"] == meta["settings"]
    assert len(single) == len(parallel) == 8
    assert not list(two.glob("candidates.jsonl.part*"))
    for a, b in zip(single, parallel):  # batches differ: scores agree up to float rounding
        assert a["id"] == b["id"] and a["num_unique"] == b["num_unique"]
        assert [c["text"] for c in a["candidates"]] == [c["text"] for c in b["candidates"]]
        for x, y in zip(a["candidates"], b["candidates"]):
            assert y["score"] == pytest.approx(x["score"], abs=1e-6) and x["count"] == y["count"]
