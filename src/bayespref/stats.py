"""Intervals and paired comparisons used by the studies and the generator evaluation.

- :func:`t_interval`, :func:`mean_t_interval`: the two-sided Student t-interval of a mean,
  ``mean +- t_{(1+level)/2, n-1} * s / sqrt(n)`` with ``s`` the sample standard deviation
  (ddof 1); one value has no interval (nan).
- :func:`wilson_interval`: the Wilson score interval of a proportion.
- :func:`paired_outcomes` and :func:`win_rate`: a paired win/tie/loss comparison of two systems
  on the same items, with its Wilson interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as scipy_stats


def _half_width(x: np.ndarray, level: float) -> float:
    """``t_{(1+level)/2, n-1} * s / sqrt(n)`` for ``n = len(x) >= 2``."""
    q = float(scipy_stats.t.ppf((1 + level) / 2, len(x) - 1))
    return q * float(x.std(ddof=1)) / math.sqrt(len(x))


def t_interval(values: Sequence[Any], confidence: float = 0.95) -> tuple[float, float]:
    """``(mean, half_width)`` of the t-interval; missing values (None / nan) are dropped.

    No values: ``(nan, nan)``; one value: ``(value, nan)``.
    """
    x = np.asarray([v for v in values if v is not None and not is_nan(v)], dtype=np.float64)
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan
    return float(x.mean()), _half_width(x, confidence)


def mean_t_interval(values: ArrayLike, level: float = 0.95) -> dict[str, float]:
    """``{"mean", "low", "high", "n"}`` of the t-interval over all values (none dropped).

    The bounds are nan when ``n < 2``.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    mean = float(x.mean())
    if n < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": 1}
    half = _half_width(x, level)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(n)}


def is_nan(value: Any) -> bool:
    """Whether ``value`` is a float nan (any other value, None included, is not)."""
    return isinstance(value, float) and math.isnan(value)


def wilson_interval(p: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion ``p`` observed on ``n`` trials.

    ``(p + z^2/2n +- z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)``, ``z = Phi^-1((1+level)/2)``.
    """
    if n <= 0:
        return math.nan, math.nan
    z = float(scipy_stats.norm.ppf((1 + level) / 2))
    z2 = z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    denom = 1 + z2 / n
    return (centre - half) / denom, (centre + half) / denom


def paired_outcomes(
    calibrated: ArrayLike,
    base: ArrayLike,
    same_text: ArrayLike | None = None,
    tie_tolerance: float = 1e-6,
) -> np.ndarray:
    """Per item: 1 if calibrated wins, 0.5 for a tie, 0 if base wins.

    A tie is ``|u_cal - u_base| <= tie_tolerance``, or an identical answer (``same_text``).
    """
    cal = np.asarray(calibrated, dtype=np.float64)
    bas = np.asarray(base, dtype=np.float64)
    if cal.shape != bas.shape:
        raise ValueError(f"calibrated {cal.shape} and base {bas.shape} utilities differ in shape")
    diff = cal - bas
    out = np.where(diff > 0, 1.0, 0.0)
    tie = np.abs(diff) <= tie_tolerance
    if same_text is not None:
        tie |= np.asarray(same_text, dtype=bool)
    out[tie] = 0.5
    return out


def win_rate(outcomes: ArrayLike, level: float = 0.95) -> dict[str, Any]:
    """Aggregate :func:`paired_outcomes`: rate, Wilson interval, wins / ties / losses."""
    x = np.asarray(outcomes, dtype=np.float64)
    n = int(x.size)
    rate = float(x.mean()) if n else math.nan
    low, high = wilson_interval(rate, n, level) if n else (math.nan, math.nan)
    return {
        "rate": rate,
        "low": low,
        "high": high,
        "wins": int((x == 1).sum()),
        "ties": int((x == 0.5).sum()),
        "losses": int((x == 0).sum()),
        "n": n,
        "interval": "wilson",
    }
