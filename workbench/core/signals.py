"""Stopping long work on SIGINT (Ctrl-C, a notebook's interrupt) or SIGTERM (``timeout``, batch schedulers) without
losing it.

Inside ``with StopSignals() as stop:`` the first SIGINT / SIGTERM only sets :attr:`StopSignals.signum`; the loop
checks :attr:`StopSignals.requested` between steps, saves what it has (a checkpoint, the finished shards) and
raises :meth:`StopSignals.interrupted`, an :class:`Interrupted` whose message says what was kept and how to
resume. A second signal stops at once (the last checkpoint still stands). ``StopSignals(immediate=True)`` raises
on the first signal, for work whose partial results are already saved piece by piece.

:class:`Interrupted` subclasses ``KeyboardInterrupt``, so a notebook shows it like a normal interrupt and
``except Exception`` does not swallow it; the command line prints its one line and exits with the conventional
code (``128 + signal``: 130 for SIGINT, 143 for SIGTERM). Outside the main thread, where Python cannot install
handlers, the context manager does nothing.
"""
from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["Interrupted", "StopSignals", "exit_code"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The shell's exit status for a process ended by ``signum`` (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)


class Interrupted(KeyboardInterrupt):
    """Work stopped by a signal after saving what it could. ``str()`` is one line: what was kept; how to resume.

    ``resume`` is the how-to-resume half; the command line replaces the library's wording ("run the same call
    again") with the exact command to rerun.
    """

    def __init__(self, signum: int, what: str, resume: str = "run the same call again"):
        super().__init__(what)
        self.signum, self.what, self.resume = int(signum), what, resume

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return f"{self.what}; to resume, {self.resume}" if self.resume else self.what


class StopSignals:
    """Turn SIGINT / SIGTERM into a stop request for the duration of a ``with`` block (see the module docstring)."""

    def __init__(self, immediate: bool = False, what: str = "stopped"):
        self.immediate, self.what = immediate, what
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def interrupted(self, what: str, resume: str = "run the same call again") -> Interrupted:
        """The exception to raise once the work is saved; ``what`` says what was kept (the signal is appended)."""
        signum = self.signum if self.signum is not None else signal.SIGINT
        return Interrupted(signum, f"{what} (stopped by {signal.Signals(signum).name})", resume)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.immediate or self.signum is not None:
            first = self.signum is None
            self.signum = signum
            what = self.what if first or self.immediate else (
                f"{self.what}: a second signal stopped it at once, the last checkpoint is kept")
            raise Interrupted(signum, f"{what} (stopped by {signal.Signals(signum).name})",
                              "run the same call again")
        self.signum = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
