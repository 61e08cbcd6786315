"""Judges: the utility of a generator's answer to a context, used to compare generators.

- :class:`OracleJudge`: the synthetic data's true expected utility ``sum_l u_l p*(l | x)``
  (:class:`~bayespref.data.synthetic.SyntheticOracle`), only meaningful on synthetic contexts.
- :class:`PreferenceModelJudge`: a trained preference model's score, ``S = sum_l u_l q(l | x)``
  (METHOD section 4, ``expected-utility``) or the worst-class rule. It should be trained
  separately from the preference model that ranked the calibration candidates.

:func:`load_judge` builds either from a spec string (``"oracle"`` or a run directory).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .data.contexts import Context
from .data.synthetic import SyntheticOracle
from .model import PreferenceModel

JUDGE_RULES = ("expected-utility", "worst-class")


class Judge(Protocol):
    """Scores answers: one utility per (context, response), higher is better."""

    name: str

    def utilities(self, contexts: Sequence[Context], responses: Sequence[str]) -> np.ndarray: ...


class OracleJudge:
    """The synthetic data's true expected utility ``sum_l u_l p*(l | x)``."""

    name = "oracle"

    def __init__(self) -> None:
        self.oracle = SyntheticOracle()

    def utilities(self, contexts: Sequence[Context], responses: Sequence[str]) -> np.ndarray:
        """(N,) true expected utilities of the N (context, response) pairs."""
        return self.oracle.utilities(zip(contexts, responses, strict=True))


class PreferenceModelJudge:
    """A trained preference model's score (``rule``: expected-utility or worst-class)."""

    def __init__(
        self,
        run_dir: str | Path,
        rule: str = "expected-utility",
        batch_size: int = 64,
        checkpoint: str = "best",
    ) -> None:
        if rule not in JUDGE_RULES:
            raise ValueError(f"rule must be expected-utility or worst-class, got {rule!r}")
        self.model = PreferenceModel.from_run(run_dir, checkpoint=checkpoint)
        self.rule = rule
        self.batch_size = batch_size
        self.name = f"pm:{run_dir} ({rule})"

    def utilities(self, contexts: Sequence[Context], responses: Sequence[str]) -> np.ndarray:
        """(N,) scores of the N (context, response) pairs under ``rule``."""
        return self.model.score(
            list(contexts), list(responses), rule=self.rule, batch_size=self.batch_size
        )


def load_judge(spec: str, rule: str = "expected-utility", batch_size: int = 64) -> Judge:
    """``"oracle"`` or a preference-model run directory (or model folder)."""
    if spec == "oracle":
        return OracleJudge()
    if not Path(spec).exists():
        raise FileNotFoundError(f"judge must be 'oracle' or a preference-model run, got {spec!r}")
    return PreferenceModelJudge(spec, rule=rule, batch_size=batch_size)
