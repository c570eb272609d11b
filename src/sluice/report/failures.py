"""Why jobs failed: the most common error messages with the end of a failed job's stderr, and the parameter
values failed jobs share more often than the campaign does.

A failure report should answer "what do I fix first?": the message that costs the most runs, what the program
itself said last (its stderr), and whether the failures cluster on some inputs (every job with mesh=fine, the
highest temperatures).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import Any

TAIL_LINES = 5
TAIL_BYTES = 8192
MIN_FAILED = 3
"""A parameter value is reported only when at least this many failed jobs have it."""
LIFT = 2.0
"""... and it is at least this many times as common among failed jobs as among all."""
MIN_SHARE = 0.1
"""... and at least this share of the failed jobs have it."""
NUMERIC_DISTINCT = 12
"""A numeric parameter with more distinct values than this is compared by its range, not value by value."""


def causes(keyed: Iterable[tuple[str, str | None, int]], top: int = 10) -> list[dict[str, Any]]:
    """(state, message, job) of each error or failure event, oldest first -> the `top` (state, message) pairs by
    count, each with its count and its latest job."""
    n: Counter[tuple[str, str]] = Counter()
    last: dict[tuple[str, str], int] = {}
    for state, msg, job in keyed:
        key = (state, (msg or "").strip() or "(no message)")
        n[key] += 1
        last[key] = job
    return [{"state": s, "message": m, "count": c, "job_id": last[(s, m)]} for (s, m), c in n.most_common(top)]


def stderr_tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` non-empty lines of a file (read from its last TAIL_BYTES); [] when there is none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - TAIL_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def over_represented(failed: Sequence[Mapping[str, Any]], everyone: Sequence[Mapping[str, Any]]
                     ) -> list[dict[str, Any]]:
    """For each parameter key, what the failed jobs' values have in common against all jobs' (both may be
    samples). A categorical value is reported when failed jobs have it LIFT times as often as all jobs (and at
    least MIN_FAILED and MIN_SHARE of them do); a numeric key with many values when the failed jobs' median lies
    outside the middle half of all jobs' values. Most telling (highest lift) first."""
    if not failed or not everyone:
        return []
    out: list[dict[str, Any]] = []
    keys = sorted({k for p in failed for k in p})
    for k in keys:
        fv = [p[k] for p in failed if k in p]
        av = [p[k] for p in everyone if k in p]
        if not av:
            continue
        nums = [x for x in av if isinstance(x, int | float) and not isinstance(x, bool)]
        if len(nums) == len(av) and len(set(nums)) > NUMERIC_DISTINCT:
            got = _range(k, [x for x in fv if isinstance(x, int | float) and not isinstance(x, bool)], nums)
            if got is not None:
                out.append(got)
            continue
        fc, ac = Counter(map(_value, fv)), Counter(map(_value, av))
        for val, n in fc.most_common():
            f_share, a_share = n / len(failed), ac.get(val, 0) / len(everyone)
            if n >= MIN_FAILED and f_share >= MIN_SHARE and (a_share == 0 or f_share / a_share >= LIFT):
                out.append({"key": k, "kind": "value", "value": val, "failed": n,
                            "failed_share": round(f_share, 4), "all_share": round(a_share, 4),
                            "lift": None if a_share == 0 else round(f_share / a_share, 2)})
    return sorted(out, key=lambda d: (-(d["lift"] or 1e9), -d["failed"]))


def _range(key: str, fnums: list[float], anums: list[float]) -> dict[str, Any] | None:
    """A numeric key whose failed jobs' median lies beyond all jobs' upper (or lower) quartile: how many failed
    jobs lie beyond it, against how many of all."""
    anums, fnums = sorted(anums), sorted(fnums)
    q1, q3 = anums[len(anums) // 4], anums[(3 * len(anums)) // 4]
    if len(fnums) < MIN_FAILED or q1 <= median(fnums) <= q3:
        return None
    above = median(fnums) > q3
    edge = q3 if above else q1
    f_share = sum((x > edge) if above else (x < edge) for x in fnums) / len(fnums)
    a_share = sum((x > edge) if above else (x < edge) for x in anums) / len(anums)
    return {"key": key, "kind": "range", "failed": len(fnums), "side": "above" if above else "below",
            "edge": edge, "failed_share": round(f_share, 4), "all_share": round(a_share, 4),
            "failed_median": median(fnums), "all_median": median(anums),
            "lift": round(f_share / a_share, 2) if a_share else None}


def describe(p: Mapping[str, Any]) -> str:
    """One line of text for an over_represented entry."""
    if p["kind"] == "range":
        return (f"{p['key']} {p['side']} {p['edge']:g}: {100 * p['failed_share']:.0f}% of failed jobs, "
                f"{100 * p['all_share']:.0f}% of all (median {p['failed_median']:g} against {p['all_median']:g})")
    return (f"{p['key']}={p['value']}: {100 * p['failed_share']:.0f}% of failed jobs, "
            f"{100 * p['all_share']:.0f}% of all" + (f" ({p['lift']:g}x)" if p["lift"] else ""))
