#!/usr/bin/env python3
"""Staging's cost on a campaign: 1,000 jobs, each staging in 10 small files from a local source (target: under
10% more wall time than the same campaign without staging, run in the same sitting).

Each job reads its inputs and works --job-s seconds (`cat *.in > out.txt; sleep S`), or in the baseline works
alone (`echo x > out.txt; sleep S`): jobs that do nothing would measure file-creation syscalls against
/bin/true, not what staging adds to a campaign. The workspace's data/ is on --dir (default /dev/shm) so the
figure is sluice's, not the disk's.
The wall time is a whole launcher run (claims, stage-in batches, spawns, writes), median of --runs,
staged and baseline runs interleaved.

    bench_staging.py [--jobs 1000] [--files 10] [--job-s 0.05] [--runs 3] [--dir /dev/shm] [--db sqlite|pg]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import add_db_arg, load, median, workspace

from sluice.launcher.launcher import Launcher, Options


def campaign(a: argparse.Namespace, staged: bool, src: Path) -> float:
    with workspace(a.db, a.dir) as ws:
        if staged:
            ws.add_app("use", f"/bin/sh -c 'cat *.in > out.txt; sleep {a.job_s}'")
            specs = [{"name": f"j{i}", "app": "use", "stage_in": [str(src / f"f{i % 100}_{k}.in")
                                                                 for k in range(a.files)]} for i in range(a.jobs)]
        else:
            ws.add_app("use", f"/bin/sh -c 'echo x > out.txt; sleep {a.job_s}'")
            specs = [{"name": f"j{i}", "app": "use"} for i in range(a.jobs)]
        ws.add_jobs(specs)
        t0 = time.perf_counter()
        s = Launcher(ws, Options(status=False)).run()
        dt = time.perf_counter() - t0
        assert s.finished == a.jobs, s.line()
        if staged:
            assert all(len(list(j.path.glob("*.in"))) == a.files for j in ws.jobs(limit=20))
        return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--job-s", type=float, default=0.05, help="seconds each job works")
    add_db_arg(ap)
    a = ap.parse_args()
    a.dir = a.dir or "/dev/shm"
    src = Path(tempfile.mkdtemp(prefix="sluice_stage_src.", dir=a.dir))
    try:
        for i in range(100):
            for k in range(a.files):
                (src / f"f{i}_{k}.in").write_text(f"file {i} {k}\n" * 20)
        load0 = load()
        base, staged = [], []
        for _ in range(a.runs):
            base.append(campaign(a, False, src))
            staged.append(campaign(a, True, src))
        b, s = median(base), median(staged)
        print(f"baseline runs {', '.join(f'{x:.2f}' for x in base)} s; "
              f"staged {', '.join(f'{x:.2f}' for x in staged)} s")
        print(f"staging {a.jobs * a.files} files into {a.jobs} jobs: {s:.2f} s vs {b:.2f} s without, "
              f"{100 * (s / b - 1):+.1f}% wall time (target < +10%) (load {load0} -> {load()})")
    finally:
        shutil.rmtree(src, ignore_errors=True)


if __name__ == "__main__":
    main()
