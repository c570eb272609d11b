#!/usr/bin/env python3
"""LocalSpawner against the machine's spawn ceiling: N `/bin/true` tasks, each with its own
directory and stdout/stderr files, CONC at once. Prints the ratio (aim: >= 0.85).

    bench_spawner.py [--n 5000] [--conc 2] [--runs 3] [--dir DIR] [--json]

The ceiling is measured in the same sitting (runs interleaved), as the machines drift ~10%.
DIR defaults to a fresh temporary directory (on /dev/shm when present: a job's directory on a
slow local disk measures the disk, not the spawner; pass --dir to measure a real file system).
"""
from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from spawn_ceiling import ceiling  # noqa: E402

from sluice.launcher.spawn import LocalSpawner  # noqa: E402


def run_spawner(n: int, conc: int, base: str) -> float:
    """Tasks per second through LocalSpawner, driven the way the launcher drives it."""
    sp = LocalSpawner()
    sel = selectors.DefaultSelector()
    sel.register(sp.fileno(), selectors.EVENT_READ)
    env = dict(os.environ)
    argv = ["/bin/true"]
    started = done = 0
    t0 = time.perf_counter()
    while done < n:
        while started < n and started - done < conc:
            d = f"{base}/{started}"
            sp.spawn(started, argv, cwd=d, env=env, stdout=f"{d}/out", stderr=f"{d}/err")
            started += 1
        sel.select(sp.timeout_hint())
        for ev in sp.poll_events():
            if ev["ev"] != "exit" or ev["rc"] != 0:
                raise RuntimeError(f"task failed: {ev}")
            done += 1
    rate = n / (time.perf_counter() - t0)
    sp.close()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--conc", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    parent = a.dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
    ceil, rates = [], []
    ceiling(["/bin/true"], 200, a.conc)  # warm-up
    for _ in range(a.runs):
        base = tempfile.mkdtemp(prefix="bench_spawner.", dir=parent)
        try:
            ceil.append(ceiling(["/bin/true"], a.n, a.conc))
            rates.append(run_spawner(a.n, a.conc, base))
        finally:
            shutil.rmtree(base, ignore_errors=True)
    ratios = [r / c for r, c in zip(rates, ceil, strict=True)]
    res = {"n": a.n, "conc": a.conc, "dir": parent or tempfile.gettempdir(),
           "ceiling_median": statistics.median(ceil), "spawner_median": statistics.median(rates),
           "ratio_median": statistics.median(ratios), "ratios": [round(x, 3) for x in ratios]}
    print(json.dumps(res) if a.json else
          f"LocalSpawner {res['spawner_median']:.0f}/s vs ceiling {res['ceiling_median']:.0f}/s: "
          f"ratio {res['ratio_median']:.2f} (runs {res['ratios']}; {a.n} tasks, {a.conc} at once, "
          f"dirs under {res['dir']})")


if __name__ == "__main__":
    main()
