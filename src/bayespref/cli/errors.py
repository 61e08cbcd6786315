"""The one mapping from a known failure to a one-line message and an exit code.

A user's mistake (bad config, bad data, a missing file, a run that exists or is locked, a
non-finite step, a failed checkpoint) exits with 2; a stop signal with 130 after the run saved
its state. Any other exception is a bug: :func:`exit_code` returns None and the CLI lets the
traceback through.
"""

from __future__ import annotations

from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..data.schema import DataError
from ..safety import (
    NonFiniteError,
    RunExistsError,
    RunLockedError,
    TrainingInterrupted,
)
from ..studies.common import StudyError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    FileNotFoundError,
    RunExistsError,
    RunLockedError,
    NonFiniteError,
    CheckpointError,
    StudyError,
)


def exit_code(err: BaseException) -> int | None:
    """2 for a user's mistake, 130 for a stop signal, None for anything else (a bug)."""
    if isinstance(err, TrainingInterrupted):
        return 130
    if isinstance(err, USER_ERRORS):
        return 2
    return None
