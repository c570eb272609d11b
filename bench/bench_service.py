#!/usr/bin/env python3
"""One service pass over a big campaign: 1,000,000 jobs of which 100,000 are runnable (target: < 1 s).

    bench_service.py [--n 1000000] [--runnable 100000] [--repeat 5] [--db sqlite|pg|mariadb] [--json]
                     [--workspace PATH]

--workspace PATH runs the passes on a workspace built before (by bench_query.py --workspace, say: its 10% READY
jobs are the runnable ones) instead of building one.

The pass is the real `Service.run_once()` (sync batch jobs, recover dead launchers, measure the work, submit
within max_queued). The scheduler is a recorder that accepts every submit, so the figure is the service's own
database work, not sbatch's latency. Baseline in the same run: `ws.summary()` (one GROUP BY over all jobs).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

from _common import add_db_arg, backend_name, big_campaign, load, workspace

from sluice.api import Workspace
from sluice.config import QueuePolicy
from sluice.schedulers import BatchState, BatchStatus
from sluice.service import Service


class Recorder:
    """Accepts every launcher batch job and reports it queued: the service's side of the pass is measured."""

    name = "bench"

    def __init__(self) -> None:
        self.n = 0

    def submit(self, req: object) -> str:
        self.n += 1
        return str(self.n)

    def status(self, ids: list[str]) -> dict[str, BatchStatus]:
        return {i: BatchStatus(i, BatchState.QUEUED) for i in ids}

    def cancel(self, native_id: str) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--runnable", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workspace", metavar="PATH", help="an existing workspace to pass over (nothing is built)")
    add_db_arg(ap)
    a = ap.parse_args()
    load0 = load()
    with (contextlib.nullcontext(Workspace.open(a.workspace)) if a.workspace else workspace(a.db, a.dir)) as ws:
        if a.workspace:
            build_s, a.n, a.runnable = 0.0, ws.count(), ws.count(state="READY")
        else:
            build_s = big_campaign(ws, a.n, [f"UPDATE jobs SET state = 'JOB_FINISHED' WHERE id > {a.runnable}"])
        pol = QueuePolicy(name="debug", max_queued=20, max_running=20, max_nodes=128)
        object.__setattr__(ws.config, "queues", {"debug": pol})
        passes, base = [], []
        sched = Recorder()
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            ws.summary()
            base.append(time.perf_counter() - t0)
            svc = Service(ws, sched, cores_per_node=64)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            p = svc.run_once()
            passes.append(time.perf_counter() - t0)
        res = {"bench": "service_pass", "db": backend_name(a.db), "jobs": a.n, "runnable": a.runnable,
               "pass_s": statistics.median(passes), "summary_s": statistics.median(base),
               "ratio_to_summary": statistics.median(passes) / statistics.median(base),
               "first_pass_submitted": sched.n and min(sched.n, 20), "work_nodes": p.work, "build_s": build_s,
               "load": [load0, load()], "target_s": 1.0}
        res["pass"] = res["pass_s"] < 1.0
    if a.json:
        print(json.dumps(res))
    else:
        print(f"service pass over {a.n:,} jobs ({a.runnable:,} runnable, {res['db']}): {res['pass_s']:.3f} s "
              f"(median of {a.repeat}; {res['ratio_to_summary']:.2f}x a `ls --summary` query) — target < 1 s: "
              f"{'PASS' if res['pass'] else 'FAIL'}; load {res['load']}")


if __name__ == "__main__":
    main()
