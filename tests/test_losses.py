"""Tests for bayespref.losses (METHOD sections 2, 3 and 7).

Expected values are derived by hand in the tests (literal fractions or numpy formulas written
out here), never by calling the module under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from bayespref.losses import (
    LOSSES,
    PRIOR_FLOOR,
    MarginalEMA,
    forward_kl,
    get_loss,
    implicit_posterior_log,
    js_divergence,
    jsd,
    kl_divergence,
    majority_nll,
    reverse_kl,
    soft_label_kl,
)

ALL_LOSSES = ["forward-kl", "reverse-kl", "jsd", "soft", "majority"]
DPM_LOSSES = ["forward-kl", "reverse-kl", "jsd"]
BASELINES = ["soft", "majority"]


# --------------------------------------------------------------------------------------------
# Hand references (numpy, float64)
# --------------------------------------------------------------------------------------------


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_posterior(q: np.ndarray, p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Report Eq. 4: r_i(l) = p_i(l) q_i(l) / m(l), normalised over l."""
    r = p * q / m[None, :]
    return r / r.sum(axis=-1, keepdims=True)


def np_kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_l a log(a / b) with 0 log 0 = 0."""
    safe_a = np.where(a > 0, a, 1.0)
    return np.where(a > 0, a * np.log(safe_a / np.where(a > 0, b, 1.0)), 0.0).sum(axis=-1)


def np_jsd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mix = 0.5 * (a + b)
    return 0.5 * np_kl(a, mix) + 0.5 * np_kl(b, mix)


def t(x) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float32)


def make_prior(batch: int, classes: int, alpha: float = 0.1, seed: int = 0) -> torch.Tensor:
    """Smoothed prior p = (count + alpha) / (n + C alpha) from random counts of 1..5 labels."""
    gen = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 4, (batch, classes), generator=gen).float()
    counts[:, 0] += 1  # every item has at least one annotation
    return (counts + alpha) / (counts.sum(-1, keepdim=True) + classes * alpha)


def random_logits(batch: int, classes: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(batch, classes, generator=gen)


# Tiny worked example, B = 2, C = 2.
#   q_1 = softmax(0, log 3) = (1/4, 3/4),  q_2 = softmax(0, 0) = (1/2, 1/2)
#   m   = q_1 + q_2 = (3/4, 5/4)
#   p_1 = (1/2, 1/2): r_1 ∝ (1/2 * (1/4)/(3/4), 1/2 * (3/4)/(5/4)) = (1/6, 3/10) -> (5/14, 9/14)
#   p_2 = (4/5, 1/5): r_2 ∝ (4/5 * (1/2)/(3/4), 1/5 * (1/2)/(5/4)) = (8/15, 2/25) -> (20/23, 3/23)
TINY_LOGITS = [[0.0, math.log(3.0)], [0.0, 0.0]]
TINY_PRIOR = [[0.5, 0.5], [0.8, 0.2]]
TINY_Q = np.array([[1 / 4, 3 / 4], [1 / 2, 1 / 2]])
TINY_P = np.array(TINY_PRIOR)
TINY_R = np.array([[5 / 14, 9 / 14], [20 / 23, 3 / 23]])


# --------------------------------------------------------------------------------------------
# Hand-derived values
# --------------------------------------------------------------------------------------------


def test_implicit_posterior_tiny_example_by_hand():
    log_r = implicit_posterior_log(t(TINY_LOGITS), t(TINY_PRIOR))
    assert log_r.shape == (2, 2)
    assert log_r.dtype == torch.float32
    assert_close(log_r.exp(), t(TINY_R))


def test_tiny_example_losses_by_hand():
    logits, prior = t(TINY_LOGITS), t(TINY_PRIOR)
    q, p, r = TINY_Q, TINY_P, TINY_R
    expected = {
        "forward-kl": (r * np.log(r / q)).sum(-1),
        "reverse-kl": (q * np.log(q / r)).sum(-1),
        "jsd": 0.5 * (q * np.log(2 * q / (q + r))).sum(-1)
        + 0.5 * (r * np.log(2 * r / (q + r))).sum(-1),
        "soft": (p * np.log(p / q)).sum(-1),
        # Majority labels: argmax of p_1 = (1/2, 1/2) is 0 (first on ties); of p_2 it is 0.
        "majority": np.array([-math.log(1 / 4), -math.log(1 / 2)]),
    }
    for name, value in expected.items():
        out = LOSSES[name](logits, prior)
        assert out.shape == (2,), name
        assert out.dtype == torch.float32, name
        assert_close(out, t(value), msg=name)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_losses_match_numpy_formula_c3(name):
    logits = random_logits(5, 3, scale=2.0, seed=1)
    prior = make_prior(5, 3, seed=1)
    z, p = logits.double().numpy(), prior.double().numpy()
    q = np_softmax(z)
    r = np_posterior(q, p, q.sum(axis=0))
    labels = np.array([2, 0, 1, 1, 0])
    expected = {
        "forward-kl": np_kl(r, q),
        "reverse-kl": np_kl(q, r),
        "jsd": np_jsd(q, r),
        "soft": np_kl(p, q),
        "majority": -np.log(q[np.arange(5), labels]),
    }[name]
    out = LOSSES[name](logits, prior, labels=torch.tensor(labels))
    assert_close(out, t(expected), atol=1e-5, rtol=1e-5)


def test_sum_and_mean_normaliser_give_the_same_posterior():
    logits = random_logits(6, 3, seed=2)
    prior = make_prior(6, 3, seed=2)
    q, p = np_softmax(logits.double().numpy()), prior.double().numpy()
    r_sum = np_posterior(q, p, q.sum(axis=0))
    r_mean = np_posterior(q, p, q.mean(axis=0))
    np.testing.assert_allclose(r_sum, r_mean, rtol=1e-12)
    # The module's batch normaliser (logsumexp over the batch) and the EMA's first call
    # (batch mean) both give this r.
    assert_close(implicit_posterior_log(logits, prior).exp(), t(r_sum))
    log_r_ema = implicit_posterior_log(logits, prior, normaliser="ema", ema=MarginalEMA(3))
    assert_close(log_r_ema.exp(), t(r_mean))


# --------------------------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_losses_are_nonnegative(name):
    logits = random_logits(32, 4, scale=3.0, seed=3)
    prior = make_prior(32, 4, seed=3)
    prior[::3] = F.one_hot(torch.arange(32)[::3] % 4, 4).float()  # some exact zeros
    out = LOSSES[name](logits, prior)
    assert (out >= -1e-6).all()


def test_kl_of_a_distribution_with_itself_is_zero():
    log_a = F.log_softmax(random_logits(4, 5, seed=4), dim=-1)
    log_a[0, 2] = -math.inf  # a zero entry: 0 log 0 = 0
    log_a = log_a.log_softmax(-1)
    assert_close(kl_divergence(log_a, log_a), torch.zeros(4))
    assert_close(js_divergence(log_a, log_a), torch.zeros(4))


def test_jsd_symmetric_and_bounded_by_log2():
    log_a = F.log_softmax(random_logits(16, 3, scale=5.0, seed=5), dim=-1)
    log_b = F.log_softmax(random_logits(16, 3, scale=5.0, seed=6), dim=-1)
    forward, backward = js_divergence(log_a, log_b), js_divergence(log_b, log_a)
    assert_close(forward, backward)
    assert (forward <= math.log(2) + 1e-6).all()
    # Disjoint supports reach the bound: JSD((1, 0), (0, 1)) = log 2.
    disjoint = js_divergence(torch.tensor([[0.0, -math.inf]]), torch.tensor([[-math.inf, 0.0]]))
    assert_close(disjoint, torch.tensor([math.log(2)]))
    # The jsd loss is js_divergence(log q, log r), equal to js_divergence(log r, log q).
    logits, prior = random_logits(8, 3, seed=7), make_prior(8, 3, seed=7)
    log_q = F.log_softmax(logits, dim=-1)
    log_r = implicit_posterior_log(logits, prior)
    assert_close(jsd(logits, prior), js_divergence(log_r, log_q))
    assert (jsd(20 * logits, prior) <= math.log(2) + 1e-6).all()


def test_one_annotator_alpha_zero_posterior_is_one_hot_and_forward_kl_is_cross_entropy():
    logits = random_logits(5, 3, scale=2.0, seed=8)
    labels = torch.tensor([0, 2, 1, 1, 2])
    prior = F.one_hot(labels, 3).float()  # p = (count + 0) / (1 + 0)
    log_r = implicit_posterior_log(logits, prior)
    assert torch.equal(log_r.exp(), prior)
    assert_close(forward_kl(logits, prior), F.cross_entropy(logits, labels, reduction="none"))


def test_reverse_kl_floors_a_zero_prior():
    logits = random_logits(3, 3, seed=9)
    labels = torch.tensor([0, 1, 2])
    prior = F.one_hot(labels, 3).float()
    out = reverse_kl(logits, prior)
    assert torch.isfinite(out).all()
    q = np_softmax(logits.double().numpy())
    floored = np.maximum(prior.double().numpy(), PRIOR_FLOOR)
    r = np_posterior(q, floored, q.sum(axis=0))
    assert_close(out, t(np_kl(q, r)), atol=1e-4, rtol=1e-5)
    # A prior with no zeros below the floor is unaffected.
    smooth = make_prior(3, 3, seed=9)
    r_smooth = np_posterior(q, smooth.double().numpy(), q.sum(axis=0))
    assert_close(reverse_kl(logits, smooth), t(np_kl(q, r_smooth)))


EXTREME_LOGITS = [
    [1e4, -1e4, 0.0],
    [-1e4, 1e4, 1e4],
    [0.0, 0.0, -1e4],
    [1e4, 1e4, 1e4],
    [-1e4, 0.0, 1e4],
]
ZERO_PRIOR = [
    [0.0, 1.0, 0.0],
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.0],
    [0.0, 0.0, 1.0],
    [0.2, 0.3, 0.5],
]


@pytest.mark.parametrize("detach_target", [False, True])
@pytest.mark.parametrize("normaliser", ["batch", "ema"])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_finite_values_and_gradients_at_extreme_logits_with_zero_prior(
    name, normaliser, detach_target
):
    ema = MarginalEMA(3, beta=0.9) if normaliser == "ema" else None
    for _ in range(2):  # the second EMA call blends with the stored state
        logits = torch.tensor(EXTREME_LOGITS, requires_grad=True)
        out = LOSSES[name](
            logits, t(ZERO_PRIOR), normaliser=normaliser, ema=ema, detach_target=detach_target
        )
        assert torch.isfinite(out).all(), out
        out.mean().backward()
        assert torch.isfinite(logits.grad).all(), logits.grad
    if name == "jsd":
        assert (out <= math.log(2) + 1e-6).all()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bf16_logits_are_computed_in_float32(name):
    logits32 = random_logits(6, 3, seed=10)
    prior = make_prior(6, 3, seed=10)
    logits16 = logits32.bfloat16().requires_grad_()
    out = LOSSES[name](logits16, prior)
    assert out.dtype == torch.float32
    # Same numbers as float32 maths on the bf16-rounded logits, and close to the fp32 input.
    assert_close(out, LOSSES[name](logits16.detach().float(), prior))
    assert_close(out, LOSSES[name](logits32, prior), atol=2e-2, rtol=2e-2)
    out.sum().backward()
    assert logits16.grad.dtype == torch.bfloat16
    assert torch.isfinite(logits16.grad.float()).all()


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_independent_of_batch_order(name):
    logits, prior = random_logits(7, 3, seed=11), make_prior(7, 3, seed=11)
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(11))
    assert_close(LOSSES[name](logits[perm], prior[perm]), LOSSES[name](logits, prior)[perm])


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_batch_normaliser_couples_examples_but_baselines_do_not(name):
    logits, prior = random_logits(4, 3, seed=12), make_prior(4, 3, seed=12)
    changed = logits.clone()
    changed[1] = torch.tensor([3.0, -2.0, 0.5])  # change another row only
    before, after = LOSSES[name](logits, prior)[0], LOSSES[name](changed, prior)[0]
    if name in DPM_LOSSES:
        assert not torch.allclose(before, after, atol=1e-4, rtol=0.0)
    else:
        assert_close(before, after)


# --------------------------------------------------------------------------------------------
# Gradient through the target
# --------------------------------------------------------------------------------------------


def _forward_kl_grad(logits: torch.Tensor, prior: torch.Tensor, **options) -> torch.Tensor:
    logits = logits.clone().requires_grad_()
    forward_kl(logits, prior, **options).mean().backward()
    return logits.grad


def test_detach_target_changes_the_gradient_at_random_init():
    logits, prior = random_logits(8, 3, seed=13), make_prior(8, 3, seed=13)
    through = _forward_kl_grad(logits, prior)
    detached = _forward_kl_grad(logits, prior, detach_target=True)
    relative = (through - detached).norm() / detached.norm()
    assert relative > 0.1, relative


def test_detached_forward_kl_gradient_is_q_minus_r_over_b():
    # d/dz sum_l r (log r - log softmax(z)) with r fixed = -sum_l r (e_l - q) = q - r;
    # the mean over the batch divides by B.
    logits, prior = random_logits(8, 3, seed=14), make_prior(8, 3, seed=14)
    grad = _forward_kl_grad(logits, prior, detach_target=True)
    q = np_softmax(logits.double().numpy())
    r = np_posterior(q, prior.double().numpy(), q.sum(axis=0))
    assert_close(grad, t((q - r) / 8))


# --------------------------------------------------------------------------------------------
# EMA normaliser
# --------------------------------------------------------------------------------------------


def test_ema_first_call_uses_the_batch_mean():
    logits, prior = random_logits(5, 3, seed=15), make_prior(5, 3, seed=15)
    ema = MarginalEMA(3, beta=0.9)
    assert ema.m is None
    log_r = implicit_posterior_log(logits, prior, normaliser="ema", ema=ema)
    assert_close(log_r, implicit_posterior_log(logits, prior, normaliser="batch"))
    assert_close(ema.m, t(np_softmax(logits.double().numpy()).mean(axis=0)))
    assert ema.m.dtype == torch.float32
    assert not ema.m.requires_grad
    assert ema.num_updates == 1


def test_ema_update_formula_and_gradient_through_the_current_batch_only():
    beta = 0.9
    logits1, logits2 = random_logits(5, 3, seed=16), random_logits(4, 3, scale=2.0, seed=17)
    prior2 = make_prior(4, 3, seed=17)
    ema = MarginalEMA(3, beta=beta)
    implicit_posterior_log(logits1, make_prior(5, 3, seed=16), normaliser="ema", ema=ema)
    q1 = np_softmax(logits1.double().numpy())
    q2 = np_softmax(logits2.double().numpy())
    m2 = beta * q1.mean(axis=0) + (1 - beta) * q2.mean(axis=0)

    logits2 = logits2.clone().requires_grad_()
    log_r = implicit_posterior_log(logits2, prior2, normaliser="ema", ema=ema)
    assert_close(ema.m, t(m2))
    assert ema.num_updates == 2
    assert_close(log_r.exp(), t(np_posterior(q2, prior2.double().numpy(), m2)))

    # Gradient: the same as treating beta * m_1 as a constant and differentiating the rest.
    weights = torch.tensor([0.3, -1.0, 2.0])
    (log_r * weights).sum().backward()
    z = logits2.detach().clone().requires_grad_()
    log_q = F.log_softmax(z, dim=-1)
    m = beta * t(q1.mean(axis=0)) + (1 - beta) * log_q.exp().mean(0)
    ((prior2.log() + log_q - m.log()).log_softmax(-1) * weights).sum().backward()
    assert_close(logits2.grad, z.grad)


def test_ema_update_false_leaves_the_state_unchanged():
    ema = MarginalEMA(3, beta=0.5)
    implicit_posterior_log(
        random_logits(4, 3, seed=18), make_prior(4, 3), normaliser="ema", ema=ema
    )
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in ema.state_dict().items()}
    logits2 = random_logits(4, 3, seed=19)
    log_r = implicit_posterior_log(
        logits2, make_prior(4, 3), normaliser="ema", ema=ema, update_ema=False
    )
    assert torch.equal(ema.m, state["m"])
    assert ema.num_updates == state["num_updates"] == 1
    # The evaluation call still uses the blended marginal.
    m = 0.5 * state["m"].double().numpy() + 0.5 * np_softmax(logits2.double().numpy()).mean(0)
    q2 = np_softmax(logits2.double().numpy())
    assert_close(log_r.exp(), t(np_posterior(q2, make_prior(4, 3).double().numpy(), m)))
    # Evaluating before any update leaves it uninitialised.
    fresh = MarginalEMA(3)
    implicit_posterior_log(logits2, make_prior(4, 3), normaliser="ema", ema=fresh, update_ema=False)
    assert fresh.m is None and fresh.num_updates == 0


def test_ema_state_dict_round_trip_through_safetensors_and_json(tmp_path):
    ema = MarginalEMA(3, beta=0.8)
    for seed in (20, 21):
        forward_kl(random_logits(4, 3, seed=seed), make_prior(4, 3), normaliser="ema", ema=ema)
    state = ema.state_dict()
    save_file({"m": state["m"]}, tmp_path / "ema.safetensors")
    (tmp_path / "ema.json").write_text(
        json.dumps({"beta": state["beta"], "num_updates": state["num_updates"]})
    )

    restored = MarginalEMA(3)
    restored.load_state_dict(
        {
            **load_file(tmp_path / "ema.safetensors"),
            **json.loads((tmp_path / "ema.json").read_text()),
        }
    )
    assert restored.beta == 0.8 and restored.num_updates == 2
    assert torch.equal(restored.m, ema.m)
    logits, prior = random_logits(4, 3, seed=22), make_prior(4, 3)
    assert_close(
        forward_kl(logits, prior, normaliser="ema", ema=restored),
        forward_kl(logits, prior, normaliser="ema", ema=ema),
    )
    assert torch.equal(restored.m, ema.m)

    # An uninitialised state stays uninitialised.
    blank = MarginalEMA(3)
    blank.load_state_dict(MarginalEMA(3, beta=0.7).state_dict())
    assert blank.m is None and blank.beta == 0.7


def test_ema_rejects_bad_arguments():
    with pytest.raises(ValueError, match="beta"):
        MarginalEMA(3, beta=1.0)
    with pytest.raises(ValueError, match="shape"):
        MarginalEMA(3).load_state_dict({"m": torch.zeros(4), "beta": 0.9, "num_updates": 1})
    logits, prior = random_logits(2, 3), make_prior(2, 3)
    with pytest.raises(ValueError, match="MarginalEMA"):
        forward_kl(logits, prior, normaliser="ema")
    with pytest.raises(ValueError, match="only used"):
        forward_kl(logits, prior, ema=MarginalEMA(3))
    with pytest.raises(ValueError, match="normaliser"):
        forward_kl(logits, prior, normaliser="sum")
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        forward_kl(logits, prior, normaliser="ema", ema=MarginalEMA(4))


# --------------------------------------------------------------------------------------------
# Distributed gather hook
# --------------------------------------------------------------------------------------------


def test_gather_hook_normalises_over_the_global_batch():
    logits, prior = random_logits(3, 3, seed=23), make_prior(3, 3, seed=23)
    other_logits = random_logits(2, 3, scale=2.0, seed=24)  # "another process's" rows
    extra = F.log_softmax(other_logits, dim=-1)
    seen = []

    def gather(log_q_local):
        seen.append(log_q_local)
        return torch.cat([log_q_local, extra], dim=0)

    logits = logits.clone().requires_grad_()
    log_r = implicit_posterior_log(logits, prior, gather=gather)
    # gather receives log-probabilities: rows log-sum-exp to 0.
    assert_close(seen[0].logsumexp(-1), torch.zeros(3))
    q = np_softmax(logits.detach().double().numpy())
    m = q.sum(axis=0) + np_softmax(other_logits.double().numpy()).sum(axis=0)
    assert_close(log_r.exp(), t(np_posterior(q, prior.double().numpy(), m)))
    assert not torch.allclose(log_r, implicit_posterior_log(logits, prior))
    # Same r as the module's own batch normaliser on the concatenated batch.
    full = implicit_posterior_log(torch.cat([logits, other_logits]), torch.cat([prior, prior[:2]]))
    assert_close(log_r, full[:3])
    forward_kl(logits, prior, gather=gather).sum().backward()
    assert torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------------------------
# METHOD section 7: baselines apply log_softmax once (reference fed probabilities to CE)
# --------------------------------------------------------------------------------------------


def test_majority_applies_log_softmax_exactly_once():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 2])
    prior = make_prior(2, 3)
    out = majority_nll(logits, prior, labels=labels)
    # By hand: -log softmax(z)[y] = logsumexp(z) - z_y.
    expected = [
        math.log(math.exp(2) + 1 + math.exp(-1)) - 2.0,
        math.log(1 + math.exp(3) + math.exp(1)) - 1.0,
    ]
    assert_close(out, torch.tensor(expected))
    assert_close(out, F.cross_entropy(logits, labels, reduction="none"))
    softmax_twice = F.cross_entropy(logits.softmax(-1), labels, reduction="none")
    assert not torch.allclose(out, softmax_twice, atol=0.05)


def test_soft_applies_log_softmax_exactly_once():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    prior = torch.tensor([[0.7, 0.3, 0.0], [0.2, 0.5, 0.3]])
    entropy = -torch.xlogy(prior, prior).sum(-1)
    out = soft_label_kl(logits, prior)
    assert_close(out, F.cross_entropy(logits, prior, reduction="none") - entropy)
    softmax_twice = F.cross_entropy(logits.softmax(-1), prior, reduction="none") - entropy
    assert not torch.allclose(out, softmax_twice, atol=0.05)
    assert_close(soft_label_kl(prior.clamp_min(1e-30).log(), prior), torch.zeros(2))


def test_majority_default_labels_are_the_prior_argmax_first_on_ties():
    logits = random_logits(3, 3, seed=25)
    prior = torch.tensor([[0.4, 0.4, 0.2], [0.1, 0.45, 0.45], [0.2, 0.3, 0.5]])
    expected_labels = torch.tensor([0, 1, 2])
    assert_close(majority_nll(logits, prior), majority_nll(logits, prior, labels=expected_labels))


# --------------------------------------------------------------------------------------------
# Registry and calling convention
# --------------------------------------------------------------------------------------------


def test_registry_names():
    assert set(LOSSES) == set(ALL_LOSSES)
    for name in ALL_LOSSES:
        assert get_loss(name) is LOSSES[name]
    with pytest.raises(ValueError, match="forward-kl.*jsd.*majority.*reverse-kl.*soft"):
        get_loss("kl")


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_one_options_dict_works_for_every_loss(name):
    logits, prior = random_logits(4, 3, seed=26), make_prior(4, 3, seed=26)
    options = {
        "normaliser": "ema",
        "ema": MarginalEMA(3),
        "update_ema": True,
        "detach_target": True,
        "gather": None,
        "labels": prior.argmax(-1),
    }
    assert LOSSES[name](logits, prior, **options).shape == (4,)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_unknown_option_raises_type_error(name):
    with pytest.raises(TypeError):
        LOSSES[name](random_logits(2, 3), make_prior(2, 3), normalizer="batch")


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_shape_mismatch_raises(name):
    with pytest.raises(ValueError, match="shape"):
        LOSSES[name](random_logits(2, 3), make_prior(2, 4))
