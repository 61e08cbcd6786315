"""Tests for bayespref.metrics: hand-derived values and invariants (METHOD section 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bayespref.cli.tables import format_table
from bayespref.metrics import (
    METRICS,
    PROB_FLOOR,
    Metric,
    compute_metrics,
    ece,
    ece_hard,
    entropy_spearman,
    expected_calibration_error,
    is_better,
    jsd_per_item,
    macro_f1,
    soft_ce_per_item,
)

LOG2 = math.log(2.0)

# Two items, two classes. Item 0: annotators agree on class 0; item 1: a 50/50 split.
Q = np.array([[0.8, 0.2], [0.4, 0.6]])
T = np.array([[1.0, 0.0], [0.5, 0.5]])
LABELS = np.array([0, 0])  # the tie on item 1 resolved toward class 0 (done elsewhere)


def random_distributions(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    return rng.dirichlet(np.full(c, 0.7), size=n)


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


# ---------------------------------------------------------------------------------------------
# Hand-derived values on the 2-item example


def test_two_item_example_by_hand():
    soft_ce = 0.5 * (-math.log(0.8) + -(0.5 * math.log(0.4) + 0.5 * math.log(0.6)))
    floor = 0.5 * (0.0 + LOG2)
    jsd_0 = 0.5 * kl([1.0, 0.0], [0.9, 0.1]) + 0.5 * kl([0.8, 0.2], [0.9, 0.1])
    jsd_1 = 0.5 * kl([0.5, 0.5], [0.45, 0.55]) + 0.5 * kl([0.4, 0.6], [0.45, 0.55])
    expected = {
        "soft_ce": soft_ce,
        "entropy_floor": floor,
        "excess_ce": 0.5 * (kl([1.0, 0.0], [0.8, 0.2]) + kl([0.5, 0.5], [0.4, 0.6])),
        "jsd": 0.5 * (jsd_0 + jsd_1),
        "manhattan": 0.5 * ((0.2 + 0.2) + (0.1 + 0.1)),
        "accuracy": 0.5,  # argmax q = [0, 1] vs labels [0, 0]
        # class 0: TP 1, FP 0, FN 1 -> 2/3; class 1: TP 0, FP 1, FN 0 -> 0
        "macro_f1": 0.5 * (2 / 3 + 0.0),
        # confidences 0.8 and 0.6 fall in different bins; agreement t(argmax q) = 1.0 and 0.5
        "ece": 0.5 * abs(1.0 - 0.8) + 0.5 * abs(0.5 - 0.6),
        # 0/1 correctness 1 and 0
        "ece_hard": 0.5 * abs(1.0 - 0.8) + 0.5 * abs(0.0 - 0.6),
        "brier": 0.5 * ((0.2**2 + 0.2**2) + (0.1**2 + 0.1**2)),
        # H(q) and H(t) both larger on item 1
        "entropy_spearman": 1.0,
    }
    results = compute_metrics(Q, T, LABELS)
    assert set(results) == set(expected)
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-12), name
        assert isinstance(results[name], float)


def test_per_item_values_and_their_mean():
    per_item = METRICS["soft_ce"].per_item(Q, T)
    np.testing.assert_allclose(
        per_item, [-math.log(0.8), -(0.5 * math.log(0.4) + 0.5 * math.log(0.6))], atol=1e-12
    )
    for name, metric in METRICS.items():
        if metric.per_item is None or name == "kl_true":
            continue
        values = metric.per_item(Q, T, labels=LABELS)
        assert values.shape == (2,), name
        assert metric(Q, T, labels=LABELS) == pytest.approx(values.mean(), abs=1e-15), name


def test_non_mean_metrics_have_no_per_item():
    for name in ["macro_f1", "ece", "ece_hard", "entropy_spearman"]:
        assert METRICS[name].per_item is None


def test_registry_names_and_directions():
    assert list(METRICS) == [
        "soft_ce",
        "entropy_floor",
        "excess_ce",
        "jsd",
        "manhattan",
        "accuracy",
        "macro_f1",
        "ece",
        "ece_hard",
        "brier",
        "entropy_spearman",
        "kl_true",
    ]
    higher = {n for n, m in METRICS.items() if m.higher_is_better is True}
    assert higher == {"accuracy", "macro_f1", "entropy_spearman"}
    assert METRICS["entropy_floor"].higher_is_better is None
    for name, metric in METRICS.items():
        assert isinstance(metric, Metric) and metric.name == name and metric.description


def test_zero_q_where_t_positive_is_large_but_finite():
    q = np.array([[1.0, 0.0]])
    t = np.array([[0.5, 0.5]])
    value = soft_ce_per_item(q, t)[0]
    assert math.isfinite(value)
    assert value == pytest.approx(-0.5 * math.log(1.0) - 0.5 * math.log(PROB_FLOOR))
    assert math.isfinite(compute_metrics(q, t, [0])["excess_ce"])


# ---------------------------------------------------------------------------------------------
# Invariants


def test_soft_ce_is_floor_plus_excess():
    rng = np.random.default_rng(0)
    q = random_distributions(rng, 50, 4)
    t = random_distributions(rng, 50, 4)
    results = compute_metrics(q, t, t.argmax(axis=1))
    assert results["soft_ce"] == pytest.approx(
        results["entropy_floor"] + results["excess_ce"], abs=1e-12
    )
    assert results["excess_ce"] > 0


def test_q_equal_t_is_perfect():
    rng = np.random.default_rng(1)
    t = random_distributions(rng, 40, 3)
    t[0] = [1.0, 0.0, 0.0]  # exact zeros too
    results = compute_metrics(t.copy(), t, t.argmax(axis=1))
    for name in ["excess_ce", "jsd", "manhattan", "brier", "ece"]:
        assert results[name] == pytest.approx(0.0, abs=1e-12), name
    assert results["soft_ce"] == pytest.approx(results["entropy_floor"], abs=1e-12)
    assert results["entropy_spearman"] == pytest.approx(1.0)


def test_jsd_symmetric_and_bounded():
    rng = np.random.default_rng(2)
    q = random_distributions(rng, 60, 5)
    t = random_distributions(rng, 60, 5)
    forward = jsd_per_item(q, t)
    np.testing.assert_allclose(forward, jsd_per_item(t, q), atol=1e-15)
    assert np.all(forward >= -1e-15) and np.all(forward <= LOG2 + 1e-12)
    # disjoint supports reach the bound exactly
    disjoint = jsd_per_item(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]))
    assert disjoint[0] == pytest.approx(LOG2, abs=1e-15)


# ---------------------------------------------------------------------------------------------
# Calibration


def test_ece_hand_built_bins():
    # Bin (14/15, 1]: confidences 0.95, 0.97, correctness 1, 0 -> |0.5 - 0.96| = 0.46.
    # Bin (8/15, 9/15]: confidences 0.55, 0.58, correctness 1, 1 -> |1 - 0.565| = 0.435.
    expected = (2 / 4) * abs(0.5 - 0.96) + (2 / 4) * abs(1.0 - 0.565)
    value = expected_calibration_error([0.95, 0.97, 0.55, 0.58], [1.0, 0.0, 1.0, 1.0])
    assert value == pytest.approx(expected, abs=1e-12)

    # Same numbers through ece_hard: predictions [0, 0, 1, 0] against labels [0, 1, 1, 0].
    q = np.array([[0.95, 0.05], [0.97, 0.03], [0.45, 0.55], [0.58, 0.42]])
    assert ece_hard(q, labels=[0, 1, 1, 0]) == pytest.approx(expected, abs=1e-12)

    # Soft ECE: "accuracy" of each item is t(argmax q).
    t = np.array([[0.8, 0.2], [0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])
    soft_expected = (2 / 4) * abs((0.8 + 0.9) / 2 - 0.96) + (2 / 4) * abs((0.6 + 0.5) / 2 - 0.565)
    assert ece(q, t) == pytest.approx(soft_expected, abs=1e-12)


def test_ece_bins_are_right_closed_and_cover_the_ends():
    # One bin: ECE is the gap between the mean correctness and the mean confidence.
    assert expected_calibration_error([0.2, 0.9], [1.0, 1.0], n_bins=1) == pytest.approx(0.45)
    # Two bins, edges 0, 0.5, 1: 0.5 belongs to the first bin, 0.0 and 1.0 are included.
    value = expected_calibration_error([0.0, 0.5, 1.0], [1.0, 0.0, 0.0], n_bins=2)
    assert value == pytest.approx((2 / 3) * abs(0.5 - 0.25) + (1 / 3) * abs(0.0 - 1.0))


# ---------------------------------------------------------------------------------------------
# Classification and disagreement ranking


def test_macro_f1_small_confusion():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    q = np.full((6, 4), 0.1)
    q[np.arange(6), predicted] = 0.7  # class 3 never occurs, so it is left out of the mean
    f1 = [
        2 * 2 / (2 * 2 + 0 + 1),  # class 0: TP 2, FP 0, FN 1
        2 * 1 / (2 * 1 + 1 + 1),  # class 1: TP 1, FP 1, FN 1
        2 * 1 / (2 * 1 + 1 + 0),  # class 2: TP 1, FP 1, FN 0
    ]
    assert macro_f1(q, labels=labels) == pytest.approx(sum(f1) / 3, abs=1e-12)
    assert METRICS["accuracy"](q, None, labels=labels) == pytest.approx(4 / 6)


def test_entropy_spearman_sign():
    t = np.array([[1.0, 0.0], [0.9, 0.1], [0.7, 0.3], [0.5, 0.5]])  # entropy increasing
    follows = np.array([[0.95, 0.05], [0.85, 0.15], [0.75, 0.25], [0.55, 0.45]])
    assert entropy_spearman(follows, t) == pytest.approx(1.0)
    assert entropy_spearman(follows[::-1], t) == pytest.approx(-1.0)
    # Entropy does not see which side an item leans to.
    assert entropy_spearman(follows[:, ::-1], t) == pytest.approx(1.0)


def test_entropy_spearman_nan_when_constant():
    t_constant = np.array([[0.3, 0.7], [0.7, 0.3], [0.3, 0.7]])  # equal entropies, permuted
    q = np.array([[0.9, 0.1], [0.6, 0.4], [0.5, 0.5]])
    assert math.isnan(entropy_spearman(q, t_constant))
    assert math.isnan(entropy_spearman(t_constant, q))
    assert math.isnan(entropy_spearman(q[:1], q[:1]))


# ---------------------------------------------------------------------------------------------
# Synthetic ground truth


def test_kl_true_only_with_true_distribution():
    assert "kl_true" not in compute_metrics(Q, T, LABELS)
    p_true = np.array([[0.7, 0.3], [0.5, 0.5]])
    results = compute_metrics(Q, T, LABELS, true_distribution=p_true)
    expected = 0.5 * (kl([0.7, 0.3], [0.8, 0.2]) + kl([0.5, 0.5], [0.4, 0.6]))
    assert results["kl_true"] == pytest.approx(expected, abs=1e-12)
    assert list(results) == list(METRICS)
    with pytest.raises(ValueError, match="true_distribution"):
        METRICS["kl_true"](Q, T)


# ---------------------------------------------------------------------------------------------
# Model selection


def test_is_better_directions():
    assert is_better("soft_ce", 0.5, 0.6)
    assert not is_better("soft_ce", 0.6, 0.5)
    assert is_better("accuracy", 0.6, 0.5)
    assert not is_better("accuracy", 0.5, 0.6)
    assert not is_better("jsd", 0.3, 0.3)  # ties are not improvements
    assert is_better("entropy_spearman", -0.2, -0.5)


def test_is_better_nan_handling():
    nan = float("nan")
    assert not is_better("soft_ce", nan, 0.5)
    assert not is_better("soft_ce", nan, nan)
    assert not is_better("accuracy", None, 0.5)
    assert is_better("soft_ce", 10.0, nan)
    assert is_better("accuracy", 0.0, None)
    assert is_better("entropy_spearman", np.float64(0.1), np.float64(nan))


def test_is_better_rejects_reference_and_unknown_metrics():
    with pytest.raises(ValueError, match="entropy_floor") as info:
        is_better("entropy_floor", 0.1, 0.2)
    assert "soft_ce" in str(info.value) and "accuracy" in str(info.value)
    assert "entropy_floor," not in str(info.value).split("selection:")[1]
    with pytest.raises(ValueError, match="unknown metric.*'loss'.*soft_ce"):
        is_better("loss", 0.1, 0.2)


# ---------------------------------------------------------------------------------------------
# Reporting


def test_format_table_single_run():
    results = compute_metrics(Q, T, LABELS, true_distribution=T)
    table = format_table(results)
    for name in METRICS:
        assert name in table
    assert "soft_ce ↓" in table
    assert "accuracy ↑" in table
    assert "entropy_floor (ref)" in table
    assert f"{results['soft_ce']:.4f}" in table
    lines = table.splitlines()
    assert len(lines) == 2 + len(METRICS)
    assert len({len(line) for line in lines[2:] if not line.endswith(" ")}) >= 1


def test_format_table_several_runs():
    runs = {
        "soft": compute_metrics(Q, T, LABELS),
        "d-pm": compute_metrics(T, T, LABELS),
    }
    table = format_table(runs)
    header = table.splitlines()[0]
    assert "soft" in header and "d-pm" in header
    row = next(line for line in table.splitlines() if line.startswith("soft_ce ↓"))
    assert row.rstrip().endswith("*")  # q = t has the lower soft_ce
    assert "macro_f1 ↑" in table and "brier ↓" in table
    # numbers stay aligned: the decimal points of each column line up across rows
    data_rows = table.splitlines()[2:]
    points = {tuple(i for i, ch in enumerate(line) if ch == ".") for line in data_rows}
    assert len(points) == 1
    assert "kl_true" not in table


def test_format_table_missing_values_and_unknown_names():
    table = format_table({"a": {"soft_ce": 1.0, "loss": 2.0}, "b": {"accuracy": 0.5}})
    assert "loss" in table and "-" in table


# ---------------------------------------------------------------------------------------------
# Validation


def test_shape_mismatch_message():
    with pytest.raises(ValueError, match=r"same shape.*\(2, 2\).*\(2, 3\)"):
        compute_metrics(Q, np.full((2, 3), 1 / 3), LABELS)
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        compute_metrics(Q[0], T[0], LABELS[:1])
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        compute_metrics(Q, T, np.array([0, 1, 0]))
    with pytest.raises(ValueError, match=r"true_distribution.*same shape"):
        compute_metrics(Q, T, LABELS, true_distribution=np.full((3, 2), 0.5))


def test_rows_must_sum_to_one():
    bad = np.array([[0.8, 0.3], [0.5, 0.5]])
    with pytest.raises(ValueError, match="rows of q must sum to 1.*row 0"):
        compute_metrics(bad, T, LABELS)
    with pytest.raises(ValueError, match="rows of t must sum to 1"):
        compute_metrics(Q, bad, LABELS)
    # within tolerance is accepted
    compute_metrics(Q + np.array([[5e-5, 0.0], [0.0, 0.0]]), T, LABELS)


def test_labels_and_probabilities_validated():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        compute_metrics(Q, T, np.array([0, 2]))
    with pytest.raises(ValueError, match="negative"):
        compute_metrics(np.array([[1.1, -0.1], [0.5, 0.5]]), T, LABELS)
    with pytest.raises(ValueError, match="non-finite"):
        compute_metrics(np.array([[np.nan, 1.0], [0.5, 0.5]]), T, LABELS)
    # integer-valued float labels are accepted
    assert compute_metrics(Q, T, np.array([0.0, 0.0]))["accuracy"] == 0.5


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[math.log(0.8), math.log(0.2)], [math.log(0.4), math.log(0.6)]])
    q = torch.softmax(logits.requires_grad_(), dim=-1)  # float32, with grad
    results = compute_metrics(q, torch.tensor(T), torch.tensor(LABELS))
    expected = compute_metrics(Q, T, LABELS)
    for name, value in expected.items():
        assert results[name] == pytest.approx(value, abs=1e-6), name
