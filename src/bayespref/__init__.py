"""bayespref: disagreement-aware preference models (Bayesian implicit posterior, d-PM).

The Python API: ``load_config``, ``train``, ``PreferenceModel``, ``evaluate_run``
(README, "The same from Python").
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

# matplotlib, imported by the modules below, logs "Matplotlib is building the font cache" on
# its first import on a machine (before logging is set up, so Python prints it bare): nothing
# a user can act on, so only its errors are shown.
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)

# Imported here, once: the function `train` is bound after its submodule `bayespref.train`
# has been imported, so later imports of the submodule cannot rebind the package attribute
# to the module (which made a second `bayespref.train(config)` fail).
from .config import TrainConfig, load_config  # noqa: E402
from .evaluation import evaluate_run  # noqa: E402
from .model import PreferenceModel  # noqa: E402
from .train import train  # noqa: E402

__all__ = ["PreferenceModel", "TrainConfig", "evaluate_run", "load_config", "train"]
