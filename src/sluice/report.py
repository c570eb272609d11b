"""Campaign reports from the event log: throughput, utilization and errors, over time.

Everything is computed from `events` (append-only), so a report can be made at any time, for any window,
without the launchers having kept counters.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sluice.api import Workspace
from sluice.states import S


@dataclass
class Report:
    start: float
    end: float
    finished: int
    failed: int
    runs: int
    peak_running: int
    mean_running: float
    rate_per_s: float
    errors: dict[str, int] = field(default_factory=dict)
    timeline: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def build(ws: Workspace, *, workflow: str | None = None, bins: int = 20) -> Report:
    """Throughput (jobs finished over time), utilization (jobs running over time) and the error messages."""
    rows = ws.run_events(workflow=workflow)
    if not rows:
        return Report(0.0, 0.0, 0, 0, 0, 0, 0.0, 0.0)
    t0, t1 = rows[0].timestamp, rows[-1].timestamp
    span = max(t1 - t0, 1e-9)
    width = span / bins
    timeline = [{"t": t0 + i * width, "finished": 0.0, "running": 0.0} for i in range(bins)]
    running = peak = finished = failed = runs = 0
    busy = 0.0
    last = t0
    errors: Counter[str] = Counter()
    for r in rows:
        busy += running * (r.timestamp - last)
        last = r.timestamp
        if r.to_state == S.RUNNING:
            running += 1
            runs += 1
            peak = max(peak, running)
        elif r.from_state == S.RUNNING:
            running = max(0, running - 1)
        if r.to_state == S.JOB_FINISHED:
            finished += 1
        elif r.to_state == S.FAILED:
            failed += 1
        if r.to_state in (S.RUN_ERROR, S.RUN_TIMEOUT):
            errors[f"{r.to_state}: {r.message or ''}".strip()] += 1
        i = min(bins - 1, int((r.timestamp - t0) / width))
        timeline[i]["finished"] = finished
        timeline[i]["running"] = max(timeline[i]["running"], running)
    for i in range(1, bins):  # cumulative counts carry over empty bins
        timeline[i]["finished"] = max(timeline[i]["finished"], timeline[i - 1]["finished"])
    return Report(t0, t1, finished, failed, runs, peak, busy / span, finished / span, dict(errors.most_common(20)),
                  timeline)
