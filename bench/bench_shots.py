#!/usr/bin/env python3
"""Event-triggered latency: a waiting launcher and `sluice watch`, 100 shot files (targets: a file's job RUNNING
within 0.5 s at p95, a 0.3 s analysis finished within 1 s at p95, from the moment the file appears).

The watcher (inotify) and the launcher (--idle-timeout, a priority and a deadline on each job) run as real
`sluice` processes on one SQLite workspace in --dir; the files appear by rename (complete at once) every
--period seconds (jittered). Latencies come from the jobs' events against each file's rename time.

    bench_shots.py [--files 100] [--period 0.4] [--work 0.3] [--dir /dev/shm]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import load

from sluice.api import Workspace


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--period", type=float, default=0.4)
    ap.add_argument("--work", type=float, default=0.3)
    ap.add_argument("--dir", default="/dev/shm")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sluice_shots.", dir=a.dir))
    ws = Workspace.create(root / "ws")
    ws.add_app("ana", f"{sys.executable} -S -c 'import time; time.sleep({a.work})' {{input}}")
    shots = root / "shots"
    shots.mkdir()
    env = {**os.environ, "SLUICE_WORKSPACE": str(ws.path)}
    sluice = [sys.executable, "-m", "sluice"]
    load0 = load()
    la = subprocess.Popen([*sluice, "launcher", "--idle-timeout", "600", "--quiet"], env=env,
                          stderr=subprocess.DEVNULL)
    wa = subprocess.Popen([*sluice, "watch", str(shots), "--app", "ana", "--param", "input={path}",
                           "--deadline", "1", "--priority", "5"], env=env, stderr=subprocess.DEVNULL)
    arrived: dict[str, float] = {}
    try:
        time.sleep(2.0)  # both up and waiting
        rng = random.Random(1)
        for k in range(a.files):
            name = f"shot_{k:04d}.dat"
            (shots / f".{name}").write_text("x" * 1000)
            os.rename(shots / f".{name}", shots / name)
            arrived[name] = time.time()
            time.sleep(a.period * rng.uniform(0.5, 1.5))
        end = time.time() + 30
        while time.time() < end and ws.count(state="JOB_FINISHED") < a.files:
            time.sleep(0.1)
    finally:
        for p in (wa, la):
            p.send_signal(signal.SIGTERM)
        for p in (wa, la):
            p.wait(30)
    run, done = [], []
    for j in ws.jobs():
        h = {e.to_state: e.timestamp for e in j.history}
        run.append(h["RUNNING"] - arrived[j.name])
        done.append(h["JOB_FINISHED"] - arrived[j.name])
    assert len(done) == a.files, f"{len(done)} of {a.files} shots analysed"
    print(f"{a.files} files every ~{a.period:g} s, {a.work:g} s analysis: file -> RUNNING p50 {pct(run, 0.5):.3f} s "
          f"p95 {pct(run, 0.95):.3f} s (target 0.5); file -> finished p50 {pct(done, 0.5):.3f} s "
          f"p95 {pct(done, 0.95):.3f} s (target 1.0) (load {load0} -> {load()})")


if __name__ == "__main__":
    main()
