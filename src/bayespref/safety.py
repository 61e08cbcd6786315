"""Keeping a long run safe: one writer per run directory, and a graceful stop on signals.

- :class:`RunLock` holds an exclusive ``flock`` on ``<run>/.lock`` for the life of a run. The
  operating system releases it when the process dies, even by SIGKILL, so a crashed run never
  leaves a stale lock behind. A second process on the same run directory is refused.
- :class:`GracefulStop` turns the first SIGINT/SIGTERM into a request that the training loop
  honours at the next step boundary (save a checkpoint, then exit); a second signal exits at
  once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; documented in docs/reliability.md
    # mypy types a name by its first binding (the module), so ``None`` needs the ignore.
    fcntl = None  # type: ignore[assignment]


class RunLockedError(RuntimeError):
    """Another process is using this run directory."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on a signal after saving a checkpoint; ``--resume`` continues it."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class RunExistsError(RuntimeError):
    """The run directory already holds a run and ``resume`` was not asked for."""


class NothingToResumeError(FileNotFoundError):
    """``resume`` was asked for a run directory that holds no run."""


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient; the step was not applied."""


class RunLock:
    """An exclusive lock on a run directory (a context manager)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.parent} is in use by {holder}; wait for it to finish or use "
                    f"another run name"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class GracefulStop:
    """First SIGINT/SIGTERM: set :attr:`requested`. Second: exit at once (status 130/143).

    Handlers are installed only from the main thread (Python's rule) and the previous
    handlers are restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.signal_name: str | None = None
        # the handlers ``signal.signal`` returned, restored on exit
        self._previous: dict[
            int, Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
        ] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            logger.error("second signal: exiting now without saving")
            os._exit(128 + signum)
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        logger.warning(
            "%s received: saving a checkpoint at the end of this step, then stopping "
            "(send it again to exit at once)",
            self.signal_name,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
