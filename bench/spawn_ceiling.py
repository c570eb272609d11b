#!/usr/bin/env python3
"""Spawn ceiling: how many short processes per second this machine can run, the yardstick for launcher rates.

Nothing but a posix_spawn loop: CONC children of CMD (default /bin/true) are kept running at once, each one
reaped with os.wait is replaced by a new one until N have finished. No database, no files, no per-task
bookkeeping, so no launcher can beat it on the same machine. Measure it in the same sitting as the figure
it divides (the benches interleave the two runs): these VMs drift by ~10% within minutes.

    python bench/spawn_ceiling.py [--n 10000] [--conc CORES] [--runs 3] [--json] [-- CMD ARGS...]

From Python (bench_launcher.py, bench_spawner.py): `from spawn_ceiling import ceiling`;
`ceiling(argv, n, conc)` returns finished tasks per second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time


def _executable(name: str) -> str:
    """posix_spawn wants a path: a bare name is looked up on PATH (once, before the clock starts)."""
    if os.sep in name:
        return name
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"spawn_ceiling: {name!r} is not on PATH")
    return found


def ceiling(argv: list[str], n: int, conc: int) -> float:
    """Run argv n times, at most conc at a time; return finished tasks per second.

    Every child must exit 0 (a failing command would measure nothing): RuntimeError otherwise.
    """
    if n < 1 or conc < 1:
        raise ValueError(f"spawn_ceiling: n and conc must be >= 1 (got n={n}, conc={conc})")
    exe, env = _executable(argv[0]), dict(os.environ)
    mine: set[int] = set()
    started = finished = 0
    t0 = time.perf_counter()
    while finished < n:
        while len(mine) < conc and started < n:
            mine.add(os.posix_spawn(exe, argv, env))
            started += 1
        pid, status = os.wait()
        if pid not in mine:  # a child of the caller's, not ours: not counted
            continue
        mine.discard(pid)
        if status != 0:
            raise RuntimeError(f"spawn_ceiling: {argv!r} exited with {os.waitstatus_to_exitcode(status)}")
        finished += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="tasks per run (default 10000)")
    ap.add_argument("--conc", type=int, default=os.cpu_count() or 1, help="children at once (default: cores)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs, after a short warm-up (default 3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("cmd", nargs="*", default=["/bin/true"], help="the command to spawn (after --)")
    a = ap.parse_args()
    argv = [_executable(a.cmd[0]), *a.cmd[1:]]
    ceiling(argv, min(a.n, 100), a.conc)  # warm-up: page cache, CPU frequency
    rates = [ceiling(argv, a.n, a.conc) for _ in range(a.runs)]
    res = {"cmd": argv, "n": a.n, "conc": a.conc, "runs": a.runs,
           "min": min(rates), "median": statistics.median(rates), "max": max(rates)}
    if a.json:
        print(json.dumps(res))
    else:
        print(f"spawn ceiling {res['median']:.0f}/s (min {res['min']:.0f}, max {res['max']:.0f}; "
              f"{a.runs} runs of {a.n} x {' '.join(argv)}, {a.conc} at once)")


if __name__ == "__main__":
    main()
