"""StepTimer: the per-step seconds the demo and the whole-corpus profile record."""
from __future__ import annotations

from workbench.core import timing


def test_laps_record_the_time_since_the_previous_lap(monkeypatch):
    clock = iter([10.0, 12.5, 12.5, 20.0, 21.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    t = timing.StepTimer()            # start at 10.0
    assert t.lap("load") == 2.5       # 12.5
    assert t.lap("harvest") == 0.0    # 12.5
    assert t.lap("train") == 7.5      # 20.0
    assert t.finish() == {"load": 2.5, "harvest": 0.0, "train": 7.5, "total": 11.0}
    assert t.line() == "load 2  harvest 0  train 8  total 11"
