"""Seconds per step of a long job (the demo, the whole-corpus profile), for its summary."""
from __future__ import annotations

import time

__all__ = ["StepTimer"]


class StepTimer:
    """``lap(step)`` records the seconds since the previous lap (or the start) under ``step``; ``times`` is the
    record, with ``total`` once :meth:`finish` is called."""

    def __init__(self, announce: str | None = None):
        self.times: dict[str, float] = {}
        self.announce = announce  # a prefix: print "<prefix> <step> done in N s" at each lap
        self._start = self._last = time.perf_counter()

    def lap(self, step: str) -> float:
        now = time.perf_counter()
        self.times[step] = round(now - self._last, 1)
        self._last = now
        if self.announce:
            print(f"{self.announce} {step} done in {self.times[step]:.0f} s", flush=True)
        return self.times[step]

    def finish(self) -> dict[str, float]:
        self.times["total"] = round(time.perf_counter() - self._start, 1)
        return self.times

    def line(self) -> str:
        return "  ".join(f"{k} {v:.0f}" for k, v in self.times.items())
