"""Campaign reports from the event log: throughput, utilization, time in each state, failures and their causes.

Everything is computed from `events` (append-only) and the allocations on record (batch jobs, launcher
sessions), so a report can be made at any time, for any window, without the launchers having kept counters.
The event scan is one query returning small integers (sluice.api.progress.report_rows), turned into numpy
arrays (series.py); the time in each state comes from whole histories of a sample of jobs (exact up to
SAMPLE jobs, an estimate scaled up beyond), failures from the error messages and the failed jobs' files and
parameters (failures.py). `build` makes the numbers; `plots.draw` the PNG and SVG; `text.summary` the text.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sluice.api import Workspace, job_path, progress
from sluice.report import failures, series
from sluice.states import END, State

SAMPLE = 10_000
"""Jobs whose whole history is read for the time in each state (an estimate within ~1% beyond), and failed
and all jobs whose parameters are compared."""
LONGEST = 10


@dataclass
class Report:
    """A campaign's report over [start, end]: bins of equal width (`edges`), totals, and what failed and why."""

    start: float = 0.0
    end: float = 0.0
    workflows: list[str] | None = None
    since: float | None = None
    counts: dict[str, int] = field(default_factory=dict)
    jobs: int = 0
    finished: int = 0
    failed: int = 0
    errors: int = 0
    runs: int = 0
    rate_per_s: float = 0.0
    peak_rate_per_s: float = 0.0
    peak_busy_nodes: float = 0.0
    peak_busy_cores: float = 0.0
    node_utilization: float | None = None
    core_utilization: float | None = None
    cores_per_node: int = 1
    edges: list[float] = field(default_factory=list)
    finished_per_bin: list[int] = field(default_factory=list)
    failed_per_bin: list[int] = field(default_factory=list)
    errors_per_bin: list[int] = field(default_factory=list)
    busy_nodes: list[float] = field(default_factory=list)
    busy_cores: list[float] = field(default_factory=list)
    alloc_nodes: list[float] = field(default_factory=list)
    time_in_state: dict[str, float] = field(default_factory=dict)
    sampled: int = 0
    causes: list[dict[str, Any]] = field(default_factory=list)
    params: list[dict[str, Any]] = field(default_factory=list)
    longest: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build(ws: Workspace, *, workflow: str | list[str] | None = None, since: float | None = None, bins: int = 60,
          now: float | None = None) -> Report:
    """The report of the workflow(s) given (default all) from `since` (epoch seconds; default: the start)."""
    now = time.time() if now is None else now
    wfs = [workflow] if isinstance(workflow, str) else list(workflow) if workflow else None
    r = Report(workflows=wfs, since=since, counts=ws.summary(**({"workflow": wfs} if wfs else {})))
    r.jobs = sum(r.counts.values())
    rows = progress.report_rows(ws, workflows=wfs, since=since)
    cols = series.Columns.of(rows)
    if not len(cols.ts):
        return r
    r.cores_per_node = cores_per_node(ws)
    runs = series.runs(cols, now, progress.job_sizes(ws, workflows=wfs), r.cores_per_node)
    r.start = since if since is not None else float(cols.ts.min())
    r.end = max(float(cols.ts.max()), float(runs.end.max()) if len(runs.end) else 0.0)
    e = series.edges(r.start, r.end, bins)
    r.edges = e.tolist()
    width = float(e[1] - e[0])
    for name, kinds in (("finished", [series.FINISHED]), ("failed", [series.FAILED]),
                        ("errors", [series.RUN_ERROR, series.RUN_TIMEOUT])):
        per_bin = series.counts(cols.ts[np.isin(cols.kind, kinds)], e)
        setattr(r, f"{name}_per_bin", per_bin.tolist())
        setattr(r, name, int(per_bin.sum()))
    r.runs = len(runs.start)
    r.rate_per_s = r.finished / (r.end - r.start) if r.end > r.start else 0.0
    r.peak_rate_per_s = max(r.finished_per_bin) / width
    r.busy_nodes = series.level_mean(runs.start, runs.end, runs.nodes, e).tolist()
    r.busy_cores = series.level_mean(runs.start, runs.end, runs.cores, e).tolist()
    r.peak_busy_nodes = series.peak_level(runs.start, runs.end, runs.nodes)
    r.peak_busy_cores = series.peak_level(runs.start, runs.end, runs.cores)
    allocs = progress.allocations(ws)
    if allocs:
        a = np.array([(s, now if t is None else t, n) for s, t, n in allocs], dtype=np.float64)
        r.alloc_nodes = series.level_mean(a[:, 0], a[:, 1], a[:, 2], e).tolist()
        held = sum(r.alloc_nodes)
        r.node_utilization = sum(r.busy_nodes) / held if held > 0 else None
        r.core_utilization = sum(r.busy_cores) / (held * r.cores_per_node) if held > 0 else None
    else:
        r.alloc_nodes = [0.0] * bins
    sample = _sample(ws, r.jobs, wfs)
    _states(ws, r, sample, now)
    _failures(ws, r, cols, rows, wfs, sample)
    _longest(ws, r, runs)
    return r


def cores_per_node(ws: Workspace) -> int:
    """Cores of a node, as the service sizes batch jobs by: [launcher] cores_per_node in sluice.toml, else this
    machine's (launcher sessions record their nodes' names, not their cores)."""
    import os

    return int(ws.config.launcher.get("cores_per_node", os.cpu_count() or 1))


def _sample(ws: Workspace, n: int, wfs: list[str] | None) -> list[int]:
    """About SAMPLE of the selection's job ids (all of them when there are fewer)."""
    every = max(1, math.ceil(n / SAMPLE))
    return progress.sample_ids(ws, every, workflows=wfs) if every > 1 else ws.ids(**({"workflow": wfs} if wfs else {}))


def _states(ws: Workspace, r: Report, ids: list[int], now: float) -> None:
    r.sampled = len(ids)
    spent = series.time_in_states(progress.histories(ws, ids), now, r.since, frozenset(END))
    scale = r.jobs / len(ids) if ids else 0.0
    r.time_in_state = {st.value: round(spent[st.value] * scale, 3) for st in State if st.value in spent}


def _failures(ws: Workspace, r: Report, cols: series.Columns, rows: list[tuple[Any, ...]],
              wfs: list[str] | None, sample: list[int]) -> None:
    """Causes from the events' messages (the latest job of each gets its stderr's last lines); parameters
    the failed jobs share, from samples of failed and of all jobs."""
    rows_at = np.flatnonzero(np.isin(cols.kind, [series.FAILED, series.RUN_ERROR, series.RUN_TIMEOUT]))
    if not len(rows_at):
        return
    names = {series.FAILED: "FAILED", series.RUN_ERROR: "RUN_ERROR", series.RUN_TIMEOUT: "RUN_TIMEOUT"}
    r.causes = failures.causes(zip([names[k] for k in cols.kind[rows_at].tolist()],
                                   [rows[i][3] for i in rows_at.tolist()], cols.job[rows_at].tolist(), strict=True))
    jobs = {j[0]: j for j in progress.job_rows(ws, [c["job_id"] for c in r.causes])}
    for c in r.causes:
        j = jobs.get(c["job_id"])
        c["stderr"] = [] if j is None else failures.stderr_tail(
            job_path(ws.config.data_dir, j[4], j[2], j[1], j[0]) / f"{j[1]}.err")
    n_failed = r.counts.get("FAILED", 0)
    if n_failed:
        failed = progress.sample_ids(ws, max(1, math.ceil(n_failed / SAMPLE)), workflows=wfs, state="FAILED")
        r.params = failures.over_represented(_params(ws, failed), _params(ws, sample))[:10]


def _params(ws: Workspace, ids: list[int]) -> list[dict[str, Any]]:
    out = []
    for row in progress.job_rows(ws, ids):
        p = row[5]
        p = json.loads(p) if isinstance(p, str) else p
        out.append(p if isinstance(p, dict) else {})
    return out


def _longest(ws: Workspace, r: Report, runs: series.Runs) -> None:
    if not len(runs.start):
        return
    secs = runs.seconds
    top = np.argsort(-secs, kind="stable")[:LONGEST]
    jobs = {j[0]: j for j in progress.job_rows(ws, sorted({int(runs.job[i]) for i in top}))}
    for i in top:
        j = jobs.get(int(runs.job[i]))
        r.longest.append({"id": int(runs.job[i]), "name": j[1] if j else None, "workflow": j[2] if j else None,
                          "state": j[3] if j else None, "seconds": round(float(secs[i]), 3),
                          "started": float(runs.start[i])})
