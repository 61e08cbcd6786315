"""Intervals and paired comparisons (bayespref.stats), by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bayespref.stats import mean_t_interval, paired_outcomes, t_interval, wilson_interval, win_rate

Z95 = 1.959963984540054  # Phi^-1(0.975)
T95_DF3 = 3.182446305284263  # t_{0.975, 3}


def test_t_interval_by_hand():
    # values 1, 2, 3, 4: mean 2.5, s = sqrt(5/3), t_{0.975, 3} = 3.1824 (t table)
    mean, half = t_interval([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert half == pytest.approx(3.182446 * math.sqrt(5 / 3) / 2, rel=1e-5)
    # two seeds: t_{0.975, 1} = 12.7062; values 0 and 2: s = sqrt(2), half = 12.7062
    assert t_interval([0.0, 2.0])[1] == pytest.approx(12.706205 * math.sqrt(2) / math.sqrt(2))
    mean, half = t_interval([0.7])
    assert mean == 0.7 and math.isnan(half)
    assert t_interval([1.0, None, float("nan"), 3.0])[0] == pytest.approx(2.0)


def test_win_rate_counts_ties_as_half_with_a_wilson_interval():
    calibrated = [0.5, 0.2, 0.3, 0.1 + 1e-9, 0.7]
    base = [0.1, 0.2, 0.4, 0.1, 0.6]
    same_text = [False, False, False, False, True]  # identical answers tie whatever the judge says
    outcomes = paired_outcomes(calibrated, base, same_text, tie_tolerance=1e-6)
    np.testing.assert_array_equal(outcomes, [1.0, 0.5, 0.0, 0.5, 0.5])

    result = win_rate(outcomes)
    p, n = 2.5 / 5, 5
    centre = p + Z95**2 / (2 * n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2))
    low, high = (centre - half) / (1 + Z95**2 / n), (centre + half) / (1 + Z95**2 / n)
    assert result["rate"] == pytest.approx(0.5)
    assert (result["low"], result["high"]) == pytest.approx((low, high))
    assert (result["wins"], result["ties"], result["losses"]) == (1, 3, 1)
    assert result["interval"] == "wilson"
    # a sure thing still has an interval below 1
    assert wilson_interval(1.0, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(1.0, 10)[0] == pytest.approx(10 / (10 + Z95**2))


def test_t_interval_matches_the_formula():
    values = [1.0, 2.0, 3.0, 4.0]
    s = math.sqrt(((1.5**2) * 2 + (0.5**2) * 2) / 3)  # sample sd, ddof 1
    half = T95_DF3 * s / math.sqrt(4)
    out = mean_t_interval(values)
    assert out["mean"] == pytest.approx(2.5)
    assert (out["low"], out["high"]) == pytest.approx((2.5 - half, 2.5 + half))
    one = mean_t_interval([0.3])
    assert one["mean"] == 0.3 and math.isnan(one["low"])
