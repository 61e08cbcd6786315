"""bayespref: disagreement-aware preference models (Bayesian implicit posterior, d-PM)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["PreferenceModel", "TrainConfig", "evaluate_run", "load_config", "train"]


def __getattr__(name: str):
    # Lazy imports keep `import bayespref` and `bayespref --help` fast (torch loads on use).
    if name == "train":
        from .train import train

        return train
    if name == "PreferenceModel":
        from .model import PreferenceModel

        return PreferenceModel
    if name in ("TrainConfig", "load_config"):
        from . import config

        return getattr(config, name)
    if name == "evaluate_run":
        from .evaluation import evaluate_run

        return evaluate_run
    raise AttributeError(f"module 'bayespref' has no attribute {name!r}")
