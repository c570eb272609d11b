"""The report as text: what a person reads first, before the plots (counts, rates, utilization, time in each
state, the longest runs, the failures by cause with their stderr, the parameters failed jobs share)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sluice.report.failures import describe

if TYPE_CHECKING:
    from sluice.report import Report


def _span(s: float) -> str:
    if s < 120:
        return f"{s:,.1f} s"
    if s < 7200:
        return f"{s / 60:,.1f} min"
    return f"{s / 3600:,.1f} h" if s < 3 * 86400 else f"{s / 86400:,.1f} days"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def summary(r: Report) -> list[str]:
    """The text summary, one string a line."""
    scope = ", ".join(r.workflows) if r.workflows else "all workflows"
    states = ", ".join(f"{n:,} {s}" for s, n in r.counts.items()) or "none"
    out = [f"{scope}: {r.jobs:,} job(s) now: {states}"]
    if not r.edges:
        return [*out, "no job has run yet" if not r.since else "nothing happened in that window"]
    out.append(f"{_when(r.start)} to {_when(r.end)} ({_span(r.end - r.start)}): {r.finished:,} finished "
               f"({r.rate_per_s:.2f}/s, peak {r.peak_rate_per_s:.2f}/s), {r.failed:,} failed, {r.errors:,} run "
               f"error(s) or timeout(s), {r.runs:,} run(s)")
    util = "; no allocation on record"
    if r.node_utilization is not None:
        util = (f"; {100 * r.node_utilization:.1f}% of the node-hours allocated, "
                f"{100 * (r.core_utilization or 0):.1f}% of the core-hours ({max(r.alloc_nodes):,.0f} nodes at "
                f"most, {r.cores_per_node} cores each)")
    out.append(f"busy at most: {r.peak_busy_nodes:,.0f} node(s), {r.peak_busy_cores:,.0f} core(s){util}")
    if r.time_in_state:
        total = sum(r.time_in_state.values()) or 1.0
        est = f" (estimated from {r.sampled:,} of {r.jobs:,} jobs)" if r.sampled < r.jobs else ""
        out.append(f"time in each state, summed over jobs{est}: " + ", ".join(
            f"{s} {_span(v)} ({100 * v / total:.0f}%)" for s, v in r.time_in_state.items()))
    if r.longest:
        out.append("longest runs:")
        out += [f"  {x['seconds']:>10,.1f} s  job {x['id']} {x['workflow']}/{x['name']} [{x['state']}]"
                for x in r.longest]
    if r.causes:
        out.append("failures by cause:")
        for c in r.causes:
            out.append(f"  {c['count']:>8,}  {c['state']}: {c['message']}  (latest: job {c['job_id']})")
            out += [f"            | {ln}" for ln in c.get("stderr", [])]
    if r.params:
        out.append("what failed jobs share:")
        out += [f"  {describe(p)}" for p in r.params]
    return out
