#!/usr/bin/env python3
"""`sluice ls` on a big campaign (target: with 1,000,000 jobs, `ls --summary` and `ls --state READY --limit 50`
each under 0.5 s of wall time beyond interpreter start-up).

Build: add_jobs in chunks of 100,000 (the real API, so the real events and indexes), then ONE raw UPDATE per
state spreads the jobs over states (60% JOB_FINISHED, 10% each FAILED, READY, RUNNING, PREPROCESSED; no events
for these synthetic moves -- `ls` does not read events). Measure: wall time of
`[sys.executable, "-m", "sluice", "ls", ...]` minus that of `[sys.executable, "-c", "pass"]`, median of 5,
runs interleaved. Also the API calls alone (ws.summary(), ws.jobs(state="READY", limit=51) + ws.count) and the
import time of sluice.cli.main, to split the CLI figure into start-up and query.

    bench_query.py [--n 1000000] [--repeat 5] [--db sqlite|pg|URL] [--dir DIR] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from _common import add_db_arg, backend_name, big_campaign, load, median, wall, workspace

SPREAD = [("JOB_FINISHED", "id % 10 < 6"), ("FAILED", "id % 10 = 6"), ("READY", "id % 10 = 7"),
          ("RUNNING", "id % 10 = 8")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--target", type=float, default=0.5)
    add_db_arg(ap)
    a = ap.parse_args()
    load0 = load()
    with workspace(a.db, a.dir) as ws:
        build_s = big_campaign(ws, a.n, [f"UPDATE jobs SET state = '{st}' WHERE {cond}" for st, cond in SPREAD],
                               workflow="scan")
        env = {**os.environ, "SLUICE_WORKSPACE": str(ws.path)}
        py = sys.executable
        cmds = {"summary": [py, "-m", "sluice", "ls", "--summary"],
                "ready50": [py, "-m", "sluice", "ls", "--state", "READY", "--limit", "50"]}
        base = [py, "-c", "pass"]
        imp = [py, "-c", "import sluice.cli.main"]
        imp_api = [py, "-c", "import sluice.api.workspace"]
        opened = [py, "-c", "from sluice.api import Workspace; Workspace.open()"]
        out = subprocess.run(cmds["summary"], env=env, capture_output=True, text=True)
        cli_ok = out.returncode == 0
        t = {k: [] for k in (*cmds, "pass", "import", "import_api", "open")}
        api = {"summary": [], "ready50": []}
        for _ in range(a.repeat):
            t["pass"].append(wall(base, env=env))
            t["import"].append(wall(imp, env=env))
            t["import_api"].append(wall(imp_api, env=env))
            t["open"].append(wall(opened, env=env))
            if cli_ok:
                for k, c in cmds.items():
                    t[k].append(wall(c, env=env, stderr=subprocess.DEVNULL))
            t0 = time.perf_counter()
            s = ws.summary()
            api["summary"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            js = ws.jobs(state="READY", limit=51)
            if len(js) > 50:
                ws.count(state="READY")
            api["ready50"].append(time.perf_counter() - t0)
        assert sum(s.values()) == a.n, s
        p = median(t["pass"])
        res = {"bench": "query", "db": backend_name(a.db), "n": a.n, "repeat": a.repeat,
               "build_s": round(build_s, 1), "build_method": "add_jobs in 100k chunks + 4 raw UPDATEs",
               "cli_works": cli_ok, "python_pass_s": round(p, 3),
               "import_cli_beyond_start_s": round(median(t["import"]) - p, 3),
               "import_api_beyond_start_s": round(median(t["import_api"]) - p, 3),
               "open_workspace_beyond_start_s": round(median(t["open"]) - p, 3),
               "api_summary_s": round(median(api["summary"]), 3), "api_ready50_s": round(median(api["ready50"]), 3),
               "target_s": a.target, "load_before": load0}
        if cli_ok:
            for k in cmds:
                res[f"cli_{k}_beyond_start_s"] = round(median(t[k]) - p, 3)
                res[f"cli_{k}_pass"] = median(t[k]) - p < a.target
        else:
            res["cli_error"] = (out.stderr or out.stdout).strip().splitlines()[-1:]
        res["load_after"] = load()
    if a.json:
        print(json.dumps(res))
        return
    if cli_ok:
        head = (f"sluice ls --summary {res['cli_summary_beyond_start_s']:.3f} s, "
                f"ls --state READY --limit 50 {res['cli_ready50_beyond_start_s']:.3f} s beyond start-up "
                f"({res['python_pass_s']:.3f} s); target < {a.target} s: "
                f"{'PASS' if res['cli_summary_pass'] else 'FAIL'}/{'PASS' if res['cli_ready50_pass'] else 'FAIL'}")
    else:
        head = f"sluice ls not runnable ({res['cli_error']})"
    print(f"{head}; of which import sluice.cli.main {res['import_cli_beyond_start_s']:.3f} s, import sluice.api "
          f"{res['import_api_beyond_start_s']:.3f} s, import + Workspace.open() "
          f"{res['open_workspace_beyond_start_s']:.3f} s, "
          f"API summary() "
          f"{res['api_summary_s']:.3f} s, jobs(READY, 51)+count {res['api_ready50_s']:.3f} s "
          f"[{res['db']}, {a.n} jobs built in {build_s:.0f} s, median of {a.repeat}; load {load0} -> "
          f"{res['load_after']}]")


if __name__ == "__main__":
    main()
