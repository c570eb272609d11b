"""The numbers of a report, from the event rows `sluice.api.progress.report_rows` gives: pure functions over
numpy arrays, so each can be tested on a handful of rows and runs in milliseconds on millions.

Why numpy: a million jobs' runs are a few million rows; a Python loop over them costs seconds, a vectorised
pass tens of milliseconds. It comes with matplotlib (the `report` extra), which the plots need anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sluice.api.progress import KINDS, LEFT_RUNNING

RUNNING, FINISHED, FAILED, RUN_ERROR, RUN_TIMEOUT = (KINDS[s] for s in
                                                     ("RUNNING", "JOB_FINISHED", "FAILED", "RUN_ERROR", "RUN_TIMEOUT"))
Floats = NDArray[np.float64]
Ints = NDArray[np.int64]


@dataclass
class Columns:
    """report_rows as arrays: job ids, the state code (KINDS) entered, whether it left RUNNING, the times."""

    job: Ints
    kind: Ints
    left_running: NDArray[np.bool_]
    ts: Floats

    @classmethod
    def of(cls, rows: Sequence[tuple[Any, ...]]) -> Columns:
        n = len(rows)
        c = np.fromiter(map(itemgetter(1), rows), np.int64, n)  # 3x quicker than zip(*rows) on millions
        return cls(np.fromiter(map(itemgetter(0), rows), np.int64, n), c & (LEFT_RUNNING - 1), c >= LEFT_RUNNING,
                   np.fromiter(map(itemgetter(2), rows), np.float64, n))


@dataclass
class Runs:
    """One entry per run: its job, start, end (`now` for a run still going), and the nodes and cores it held
    (see runs() for a one-node job's share of its node)."""

    job: Ints
    start: Floats
    end: Floats
    nodes: Floats
    cores: Floats

    @property
    def seconds(self) -> Floats:
        return self.end - self.start


def runs(c: Columns, now: float, sizes: Sequence[tuple[int, int, int]] = (), cores_per_node: int = 1) -> Runs:
    """Pair each event into RUNNING with the job's next event out of it. The events are sorted by job, keeping
    their written order within a job (a stable sort), so a start and its end are neighbours. A start with no
    end is a run still going: it ends `now`. `sizes`: (job, nodes, cores) of the jobs not of 1 node, 1 core.

    A job of several nodes holds them whole; a one-node job holds its cores' share of a node (a launcher in
    serial mode packs such jobs side by side), so busy nodes compare with allocated nodes."""
    sel = np.flatnonzero((c.kind == RUNNING) | c.left_running)
    order = sel[np.argsort(c.job[sel], kind="stable")]
    job, ts = c.job[order], c.ts[order]
    start = c.kind[order] == RUNNING
    begins = np.flatnonzero(start)
    nxt = begins + 1
    ok = nxt < len(order)
    paired = np.zeros(len(begins), bool)
    paired[ok] = (job[nxt[ok]] == job[begins[ok]]) & c.left_running[order][nxt[ok]]
    end = np.full(len(begins), float(now))
    end[paired] = ts[nxt[paired]]
    rjob = job[begins]
    nodes, cores = np.ones(len(begins)), np.ones(len(begins))
    if sizes:
        ids, n, k = (np.array(x) for x in zip(*sorted(sizes), strict=True))
        at = np.clip(np.searchsorted(ids, rjob), 0, len(ids) - 1)
        hit = ids[at] == rjob
        nodes[hit], cores[hit] = n[at[hit]], k[at[hit]]
    nodes = np.where(nodes > 1, nodes, np.minimum(1.0, cores / max(1, cores_per_node)))
    return Runs(rjob, ts[begins], np.maximum(end, ts[begins]), nodes, cores)


def edges(t0: float, t1: float, bins: int) -> Floats:
    """`bins` equal bins from t0 to t1 (a zero span gets one second)."""
    return np.linspace(t0, t1 if t1 > t0 else t0 + 1.0, bins + 1)


def counts(ts: Floats, e: Floats) -> Ints:
    """Events per bin; the last bin includes its right edge."""
    return np.histogram(ts, bins=e)[0].astype(np.int64)


def level_mean(starts: Floats, ends: Floats, weights: Floats, e: Floats) -> Floats:
    """The time-weighted mean, over each bin, of the sum of `weights` of the intervals [start, end) open then:
    busy nodes or cores, or allocated nodes. Exact: the integral of the step function at each bin edge, from
    its cumulative sums at the sorted interval ends."""
    if len(starts) == 0:
        return np.zeros(len(e) - 1)
    t = np.concatenate([starts, ends])
    d = np.concatenate([weights, -weights])
    order = np.argsort(t, kind="stable")
    t, level = t[order], np.cumsum(d[order])
    area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(t))])  # integral from t[0] to t[i]
    j = np.searchsorted(t, e, side="right") - 1
    inside = j >= 0
    f = np.zeros(len(e))
    f[inside] = area[j[inside]] + level[j[inside]] * (e[inside] - t[j[inside]])
    return np.diff(f) / np.diff(e)


def peak_level(starts: Floats, ends: Floats, weights: Floats) -> float:
    """The largest sum of weights open at any one time (ends first when a run starts as another ends)."""
    if len(starts) == 0:
        return 0.0
    t = np.concatenate([ends, starts])
    d = np.concatenate([-weights, weights])
    order = np.argsort(t, kind="stable")
    return float(np.max(np.cumsum(d[order])))


def time_in_states(rows: Sequence[tuple[Any, ...]], now: float, since: float | None, ends: frozenset[str]
                   ) -> dict[str, float]:
    """Job-seconds spent in each state, from whole histories (job_id, from, to, timestamp; each job's in order):
    a state lasts from the event into it to the next event of the job, or to `now` for the current state
    unless it is an end state. Clipped to the window from `since`."""
    out: dict[str, float] = {}
    lo = since if since is not None else -np.inf
    prev_job, prev_state, prev_t = None, None, 0.0
    for job, _frm, to, ts in rows:
        if job == prev_job and prev_state is not None:
            dt = ts - max(prev_t, lo)
            if dt > 0:
                out[prev_state] = out.get(prev_state, 0.0) + dt
        elif prev_job is not None and prev_state not in ends:
            _ongoing(out, prev_state, prev_t, now, lo)
        prev_job, prev_state, prev_t = job, to, ts
    if prev_job is not None and prev_state not in ends:
        _ongoing(out, prev_state, prev_t, now, lo)
    return out


def _ongoing(out: dict[str, float], state: str | None, t: float, now: float, lo: float) -> None:
    if state is not None and now > max(t, lo):
        out[state] = out.get(state, 0.0) + now - max(t, lo)
