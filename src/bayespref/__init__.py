"""bayespref: disagreement-aware preference models (Bayesian implicit posterior, d-PM)."""

from __future__ import annotations

import sys
import types
from typing import Any

__version__ = "0.1.0"

__all__ = ["PreferenceModel", "TrainConfig", "evaluate_run", "load_config", "train"]

# Public name -> (module that defines it, relative to this package). Imported on first use so
# that `import bayespref` and `bayespref --help` stay fast (torch loads on use).
_EXPORTS = {
    "train": ".train",
    "PreferenceModel": ".model",
    "TrainConfig": ".config",
    "load_config": ".config",
    "evaluate_run": ".evaluation",
}


def __getattr__(name: str) -> Any:
    # PEP 562: runs only while `name` is not yet an attribute of the package.
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bayespref' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


class _Package(types.ModuleType):
    """The package's module type: keeps a public function bound when the import system binds a
    submodule of the same name.

    ``bayespref.train`` is the function :func:`bayespref.train.train`, but importing the
    submodule ``bayespref.train`` (which reading the function does, and so does
    ``import bayespref.train``) makes the import system set the package attribute ``train`` to
    the module, after which ``bayespref.train(config)`` raised "'module' object is not
    callable". Here that binding keeps the function instead; the module stays importable
    (``from bayespref.train import PreferenceTask``, ``sys.modules["bayespref.train"]``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            name in _EXPORTS
            and isinstance(value, types.ModuleType)
            and value.__name__ == f"{__name__}.{name}"
        ):
            value = getattr(value, name)  # the submodule has run: its function is defined
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
