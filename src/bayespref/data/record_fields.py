"""The optional fields of a native record that are neither text nor labels: ``true_distribution``
(the generating ``p*``, where known) and ``group`` (the context an item answers together with
others, e.g. one context's candidates). :mod:`bayespref.data.native` reads them with these."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ._common import JSON_ERRORS

DISTRIBUTION_SUM_TOL = 1e-6
"""How far from 1 the entries of a ``true_distribution`` may sum."""


def parse_true_distribution(value: Any, num_classes: int, fail) -> np.ndarray | None:
    """``p*`` as a (C,) float64 array: ``C`` finite non-negative numbers in class order summing
    to 1 within :data:`DISTRIBUTION_SUM_TOL`; a string (a CSV cell) holds its JSON list. None or
    ``""``: no distribution. Anything else raises ``fail(problem)``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except JSON_ERRORS:
            raise fail("'true_distribution' must be a JSON list of probabilities") from None
    if not (
        isinstance(value, list)
        and len(value) == num_classes
        and all(isinstance(p, int | float) and not isinstance(p, bool) for p in value)
    ):
        raise fail(
            f"'true_distribution' must be a list of {num_classes} probabilities (class order), "
            f"got {json.dumps(value, default=str)[:40]}"
        )
    p = np.asarray(value, dtype=np.float64)  # (C,)
    if not (np.all(np.isfinite(p)) and np.all(p >= 0)):
        raise fail("'true_distribution' must hold finite non-negative probabilities")
    if abs(p.sum() - 1.0) > DISTRIBUTION_SUM_TOL:
        raise fail(f"'true_distribution' must sum to 1, got {p.sum():.6g}")
    return p


def parse_group(value: Any, fail) -> str | None:
    """The group id as a string (a string or an integer in the file); None or ``""``: none."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise fail(f"'group' must be a string or an integer, got {type(value).__name__}")
    return str(value)
