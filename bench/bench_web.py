#!/usr/bin/env python3
"""`sluice web` on a big campaign (target: with 1,000,000 jobs, `GET /api/summary` and the first page of the job
table, `GET /api/jobs?limit=50`, each answer in under 100 ms).

Build: bench_query's campaign (add_jobs in 100k chunks, then raw UPDATEs spread the jobs over states: 60%
JOB_FINISHED, 10% each FAILED, READY, RUNNING, PREPROCESSED). Serve: the real `python -m sluice web --port 0` in
its own process, as a user starts it. Measure: wall time of each request over one keep-alive HTTP connection
(request sent to body read), `--repeat` times 0.1 s apart, median / p95 / max; the first request of each kind
separately (`cold`: the summary is then counted while the request waits). `/api/summary` is served from the
snapshot every client shares, refreshed in the background at most every max(0.5 s, 10 x the count's cost);
`?max_age=0` forces a count per request, i.e. the query's own cost through HTTP, shown for comparison.

    bench_web.py [--n 1000000] [--repeat 40] [--db sqlite|pg|URL] [--dir DIR] [--workspace PATH] [--json]

`--workspace PATH` serves an existing workspace instead of building one (nothing is created or dropped).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from _common import add_db_arg, backend_name, big_campaign, load, workspace

from sluice.api import views

SPREAD = [("JOB_FINISHED", "id % 10 < 6"), ("FAILED", "id % 10 = 6"), ("READY", "id % 10 = 7"),
          ("RUNNING", "id % 10 = 8")]
TARGET_MS = 100.0
KINDS = {
    "summary": "/api/summary",
    "jobs_first_page": "/api/jobs?limit=50",
    "jobs_state_READY": "/api/jobs?state=READY&limit=50",
    "jobs_workflow": "/api/jobs?workflow=scan&limit=50",
    "jobs_last_page": "/api/jobs?limit=50&after={last}",
    "page_overview_html": "/",
    "page_jobs_html": "/jobs",
    "summary_max_age_0": "/api/summary?max_age=0",
}
"""What is timed, by name. The first two are the targets."""


def serve(ws_path: Path) -> tuple[subprocess.Popen[str], int]:
    """`sluice web --port 0` on the workspace; the port it printed."""
    cmd = [sys.executable, "-m", "sluice", "-w", str(ws_path), "web", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("sluice web: http://"):
        proc.kill()
        raise SystemExit(f"bench_web: sluice web did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc, int(line.split()[2].rsplit(":", 1)[1].strip("/"))


def get(conn: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    dt = time.perf_counter() - t0
    if r.status != 200:
        raise SystemExit(f"bench_web: GET {path} -> {r.status}: {body[:200]!r}")
    return dt, body


def measure(port: int, repeat: int, last: int) -> dict[str, dict[str, float]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    paths = {k: p.format(last=last) for k, p in KINDS.items()}
    cold = {k: get(conn, p)[0] for k, p in paths.items()}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(repeat):  # interleaved, so background refreshes and load hit every kind alike
        for k, p in paths.items():
            times[k].append(get(conn, p)[0])
        time.sleep(0.1)
    conn.close()
    out = {}
    for k, xs in times.items():
        xs.sort()
        out[k] = {"cold_ms": round(cold[k] * 1000, 1), "median_ms": round(statistics.median(xs) * 1000, 1),
                  "p95_ms": round(xs[min(len(xs) - 1, int(0.95 * len(xs)))] * 1000, 1),
                  "max_ms": round(xs[-1] * 1000, 1)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--workspace", default=None, help="serve this existing workspace (no build, nothing dropped)")
    add_db_arg(ap)
    a = ap.parse_args()
    load0 = load()
    with ExitStack() as stack:
        if a.workspace:
            from sluice.api import Workspace

            ws = Workspace.open(a.workspace)
            build_s = None
        else:
            ws = stack.enter_context(workspace(a.db, a.dir))
            build_s = round(big_campaign(ws, a.n, [f"UPDATE jobs SET state = '{st}' WHERE {c}" for st, c in SPREAD],
                                         workflow="scan"), 1)
        total = sum(ws.summary().values())
        tail = views.page(ws, before=2**62, limit=26).rows  # the last page: after the 26th id from the end
        last = tail[0]["id"] if tail else 0
        proc, port = serve(ws.path)
        try:
            res = measure(port, a.repeat, last)
        finally:
            proc.terminate()
            proc.wait(30)
    verdict = {k: ("PASS" if res[k]["median_ms"] < TARGET_MS and res[k]["p95_ms"] < TARGET_MS else "FAIL")
               for k in ("summary", "jobs_first_page")}
    out = {"bench": "web", "db": backend_name(a.db) if not a.workspace else ws.engine.dialect.name, "jobs": total,
           "build_s": build_s, "repeat": a.repeat, "target_ms": TARGET_MS, "verdict": verdict,
           "load_before": load0, "load_after": load(), "results": res}
    if a.json:
        print(json.dumps(out))
        return
    print(f"sluice web, {total:,} jobs on {out['db']} (build {build_s} s); load {load0} -> {out['load_after']}")
    print(f"{'request':22s} {'cold':>8s} {'median':>8s} {'p95':>8s} {'max':>8s}  (ms, {a.repeat} requests each)")
    for k, r in res.items():
        flag = f"  {verdict[k]} (< {TARGET_MS:.0f} ms)" if k in verdict else ""
        print(f"{k:22s} {r['cold_ms']:8.1f} {r['median_ms']:8.1f} {r['p95_ms']:8.1f} {r['max_ms']:8.1f}{flag}")


if __name__ == "__main__":
    main()
