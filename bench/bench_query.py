#!/usr/bin/env python3
"""The read commands on a big campaign: `ls`, `ls --summary`, `show`, `history`, `queue ls` (target: each under
0.15 s of wall time beyond interpreter start-up with 1,000,000 jobs) and, with --report, `sluice report`
(target: under 10 s).

Build: add_jobs in chunks of 100,000 (the real API, so the real events and indexes), one `merge` job with 200
parents (the fan-in `show` draws), then ONE raw UPDATE per state spreads the jobs over states (60% JOB_FINISHED,
10% each FAILED, READY, RUNNING, PREPROCESSED), a batch job and a launcher session. With --report the run history
is added the way a launcher writes it, by INSERT ... SELECT: every job that ran gets its RUNNING event and the
events of its end (RUN_DONE, POSTPROCESSED, JOB_FINISHED; or RUN_ERROR "exit code N" and FAILED), spread over
one hour on a 10,000-node allocation of 64-core nodes, 2-61 s a run; creation events are moved before that hour.
Measure: wall time of `[sys.executable, "-m", "sluice", ...]` minus that of `[sys.executable, "-c", "pass"]`,
median of --repeat runs, interleaved, with byte-compiled modules cached (PYTHONPYCACHEPREFIX in the temp dir,
PYTHONDONTWRITEBYTECODE dropped) as an installed sluice has them; the first run of each command warms it.
Also the API calls alone and the import times, to split the CLI figures.

    bench_query.py [--n 1000000] [--repeat 5] [--db sqlite|pg|URL] [--dir DIR] [--json]
                   [--workspace PATH] [--report] [--only summary,show,...]

--workspace PATH keeps the built workspace there (and reuses it when it exists), so before/after runs of
different code can share one database: `PYTHONPATH=/tmp/before/src bench_query.py --workspace /dev/shm/q1m`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import add_db_arg, backend_name, big_campaign, load, median, wall, workspace
from sqlalchemy import text

from sluice.api import Workspace
from sluice.store import db

SPREAD = [("JOB_FINISHED", "id % 10 < 6"), ("FAILED", "id % 10 = 6"), ("READY", "id % 10 = 7"),
          ("RUNNING", "id % 10 = 8")]
FAN_IN = 200
HOUR = 3600.0


def run_history(n: int, t0: float) -> list[str]:
    """The run events of the SPREAD states, oldest first per job (RUNNING, then its end), as raw SQL."""
    start = f"{t0} + id * {HOUR / n}"
    end = f"{start} + 2 + (id * 7) % 60"
    ran = "id % 10 <> 7 AND id % 10 <> 9"
    ins = "INSERT INTO events (job_id, from_state, to_state, timestamp, actor, message) SELECT id, "
    return [
        f"UPDATE events SET timestamp = {t0 - 600}",
        f"UPDATE jobs SET created_at = {t0 - 600}",
        f"{ins}'PREPROCESSED', 'READY', {t0 - 300}, 'bench', NULL FROM jobs WHERE id % 10 = 7",
        f"{ins}'PREPROCESSED', 'RUNNING', {start}, 'launcher:1', NULL FROM jobs WHERE {ran}",
        f"{ins}'RUNNING', 'RUN_DONE', {end}, 'launcher:1', NULL FROM jobs WHERE id % 10 < 6",
        f"{ins}'RUNNING', 'RUN_ERROR', {end}, 'launcher:1', 'exit code ' || (1 + id % 3) FROM jobs "
        "WHERE id % 10 = 6",
        f"{ins}'RUN_DONE', 'POSTPROCESSED', {end}, 'launcher:1', NULL FROM jobs WHERE id % 10 < 6",
        f"{ins}'POSTPROCESSED', 'JOB_FINISHED', {end}, 'launcher:1', NULL FROM jobs WHERE id % 10 < 6",
        f"{ins}'RUN_ERROR', 'FAILED', {end}, 'launcher:1', 'out of retries' FROM jobs WHERE id % 10 = 6",
    ]


def build(ws: Workspace, n: int, report: bool) -> float:
    t = time.perf_counter()
    big_campaign(ws, n, [], workflow="scan")
    ws.add_job("merge", app="sim", params={"x": -1}, parents=list(range(1, FAN_IN + 1)), workflow="scan")
    t0 = time.time() - 2 * HOUR
    sql = [f"UPDATE jobs SET state = '{st}' WHERE {cond}" for st, cond in SPREAD]
    sql += [f"INSERT INTO batch_jobs (scheduler, native_id, queue, num_nodes, wall_time_min, job_mode, state, "
            f"submitted_at, started_at, ended_at) VALUES ('slurm', '4242', 'prod', 10000, 70, 'serial', 'running', "
            f"{t0 - 60}, {t0 - 5}, NULL)",
            f"INSERT INTO launcher_sessions (id, host, pid, batch_job_id, job_mode, started_at, heartbeat_at, info) "
            f"VALUES (1, 'nid0001', 4242, 1, 'serial', {t0 - 5}, {t0 + HOUR + 70}, "
            f"'{{\"nodes\": {json.dumps([f'nid{i:05d}' for i in range(10_000)])}}}')"]
    if report:
        sql += run_history(n, t0)
        toml = ws.path / "sluice.toml"  # 64-core nodes: what utilization is measured against
        toml.write_text(toml.read_text().replace("[launcher]\n", "[launcher]\ncores_per_node = 64\n", 1))
    with db.write(ws.engine) as conn:
        for s in sql:
            conn.execute(text(s))
        if conn.dialect.name in ("postgresql", "sqlite"):
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - t


@contextlib.contextmanager
def campaign(a: argparse.Namespace) -> Iterator[tuple[Workspace, float | None]]:
    """The benchmark's workspace: a throw-away one, or --workspace PATH (built once, then reused)."""
    if a.workspace is None:
        with workspace(a.db, a.dir) as ws:
            yield ws, build(ws, a.n, a.report)
        return
    path = Path(a.workspace)
    if (path / "sluice.toml").exists():
        yield Workspace.open(path), None
        return
    ws = Workspace.create(path)
    yield ws, build(ws, a.n, a.report)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.15)
    ap.add_argument("--report", action="store_true", help="add run history and time `sluice report` too")
    ap.add_argument("--report-target", type=float, default=10.0)
    ap.add_argument("--workspace", metavar="PATH", help="build the workspace here and keep it (reused if there)")
    ap.add_argument("--only", metavar="A,B", help="time only these CLI commands (names as in the output)")
    add_db_arg(ap)
    a = ap.parse_args()
    load0 = load()
    with campaign(a) as (ws, build_s):
        # byte-compiled modules cached (outside the tree) as an installed sluice has them, whatever this shell says
        env = {**os.environ, "SLUICE_WORKSPACE": str(ws.path),
               "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "sluice-bench-pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        py = sys.executable
        merge = ws.resolve("scan/merge")
        mid = a.n // 2 + 3
        sluice = [py, "-m", "sluice"]
        cmds = {"summary": [*sluice, "ls", "--summary"],
                "ready50": [*sluice, "ls", "--state", "READY", "--limit", "50"],
                "ls1000": [*sluice, "ls"],
                "show": [*sluice, "show", str(mid)],
                "show_fanin": [*sluice, "show", str(merge)],
                "history": [*sluice, "history", str(mid)],
                "queue_ls": [*sluice, "queue", "ls"]}
        if a.only:
            cmds = {k: v for k, v in cmds.items() if k in a.only.split(",")}
        base = [py, "-c", "pass"]
        probes = {"import": [py, "-c", "import sluice.cli.main"],
                  "import_api": [py, "-c", "import sluice.api.workspace"],
                  "open": [py, "-c", "from sluice.api import Workspace; Workspace.open()"]}
        broken = {}
        for k, c in cmds.items():
            out = subprocess.run(c, env=env, capture_output=True, text=True)
            if out.returncode != 0:
                broken[k] = (out.stderr or out.stdout).strip().splitlines()[-1:]
        t: dict[str, list[float]] = {k: [] for k in (*cmds, "pass", *probes)}
        api: dict[str, list[float]] = {"summary": [], "ready50": []}
        for _ in range(a.repeat):
            t["pass"].append(wall(base, env=env))
            for k, c in probes.items():
                t[k].append(wall(c, env=env))
            for k, c in cmds.items():
                if k not in broken:
                    t[k].append(wall(c, env=env, stderr=subprocess.DEVNULL))
            t0 = time.perf_counter()
            s = ws.summary()
            api["summary"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            js = ws.jobs(state="READY", limit=51)
            if len(js) > 50:
                ws.count(state="READY")
            api["ready50"].append(time.perf_counter() - t0)
        assert sum(s.values()) == a.n + 1, s
        p = median(t["pass"])
        res: dict[str, object] = {
            "bench": "query", "db": backend_name(a.db), "n": a.n, "repeat": a.repeat,
            "build_s": None if build_s is None else round(build_s, 1), "python_pass_s": round(p, 3),
            **{f"{k}_beyond_start_s": round(median(t[k]) - p, 3) for k in probes},
            "api_summary_s": round(median(api["summary"]), 3), "api_ready50_s": round(median(api["ready50"]), 3),
            "target_s": a.target, "load_before": load0, "broken": broken}
        for k in cmds:
            if k not in broken:
                res[f"cli_{k}_beyond_start_s"] = round(median(t[k]) - p, 3)
        if a.report:
            with tempfile.TemporaryDirectory() as out_dir:
                rt = [wall([*sluice, "report", "--out", out_dir], env=env) - p for _ in range(max(1, a.repeat // 3))]
            res["cli_report_beyond_start_s"] = round(median(rt), 2)
        res["load_after"] = load()
    if a.json:
        print(json.dumps(res))
        return
    figures = ", ".join(f"{k} {res[f'cli_{k}_beyond_start_s']:.3f} s" for k in cmds if k not in broken)
    slow = [k for k in cmds if k not in broken and float(res[f"cli_{k}_beyond_start_s"]) >= a.target]  # type: ignore[arg-type]
    line = (f"beyond start-up ({p:.3f} s): {figures}; target < {a.target} s: "
            f"{'PASS' if not slow else 'FAIL (' + ', '.join(slow) + ')'}")
    if a.report:
        rs = float(res["cli_report_beyond_start_s"])  # type: ignore[arg-type]
        line += f"; report {rs:.2f} s ({'PASS' if rs < a.report_target else 'FAIL'} < {a.report_target} s)"
    if broken:
        line += f"; not runnable: {broken}"
    print(f"{line}; import sluice.cli.main {res['import_beyond_start_s']:.3f} s, sluice.api "
          f"{res['import_api_beyond_start_s']:.3f} s, + Workspace.open() {res['open_beyond_start_s']:.3f} s, "
          f"API summary() {res['api_summary_s']:.3f} s, jobs(READY, 51)+count {res['api_ready50_s']:.3f} s "
          f"[{res['db']}, {a.n} jobs" + (f" built in {build_s:.0f} s" if build_s else ", reused")
          + f", median of {a.repeat}; load {load0} -> {res['load_after']}]")


if __name__ == "__main__":
    main()
