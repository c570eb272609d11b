#!/usr/bin/env python3
"""Bulk-adding jobs through Workspace.add_jobs (target: 100,000 jobs in under 5 s on SQLite).

Each run adds N jobs (app with one `{x}` parameter, workflow "scan", params {"x": i}) in one add_jobs call
into a fresh workspace; each job writes its jobs row and 3 event rows (CREATED->READY->STAGED_IN->
PREPROCESSED). The baseline, measured in the same run, is the database floor: the same jobs and events rows,
precomputed, written with the raw driver (db.bulk_insert) into another fresh workspace (the way add_jobs
wrote them before the optimisation). A second baseline is add_jobs as it was at commit --base-rev (read with
`git show`, imported under another name), in the same run: ratio new/old is the speed-up.
`--index-costs` instead times add_jobs with each optional index dropped, interleaved with the full schema.

    bench_add.py [--n 100000] [--runs 3] [--db sqlite|pg|mariadb|URL] [--dir DIR] [--base-rev REV|none]
                 [--index-costs] [--profile] [--json]
"""
from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, add_db_arg, backend_name, load, median, workspace

from sluice.api.insert import EVENT_INSERT_COLUMNS, JOB_INSERT_COLUMNS
from sluice.store import db


def job_specs(n: int) -> list[dict]:
    return [{"name": f"sim{i}", "app": "sim", "workflow": "scan", "params": {"x": i}} for i in range(n)]


def old_api(rev: str):
    """sluice.api as of git revision rev, imported as a separate module (the rest of sluice is shared)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/sluice/api.py"], check=True,
                         capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="bench_add.")) / "sluice_api_old.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("sluice_api_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["sluice_api_old"] = mod
    spec.loader.exec_module(mod)
    shutil.rmtree(path.parent, ignore_errors=True)
    return mod


def run_add(a: argparse.Namespace, profile: bool = False, api=None, drop: tuple[str, ...] = ()) -> float:
    with workspace(a.db, a.dir) as ws:
        ws.add_app("sim", "/bin/echo {x}")
        for ix in drop:
            with db.write(ws.engine) as conn:
                conn.exec_driver_sql(f"DROP INDEX {ix}" if conn.dialect.name != "mysql" else
                                     f"DROP INDEX {ix} ON {ix.split('_')[1]}")
        specs = job_specs(a.n)
        target = ws if api is None else api.Workspace(ws.config, ws.engine, ws.actor)
        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        ids = target.add_jobs(specs)
        if prof:
            prof.disable()
        dt = time.perf_counter() - t0
        assert len(ids) == a.n
        assert ws.count() == a.n
        if prof:
            pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return dt


def run_floor(a: argparse.Namespace) -> float:
    """The same rows through the raw driver: no validation, no row building (precomputed before timing)."""
    with workspace(a.db, a.dir) as ws:
        app = ws.add_app("sim", "/bin/echo {x}")
        now = time.time()
        jobs_rows, ev_rows = [], []
        for i in range(1, a.n + 1):
            row = {c: None for c in JOB_INSERT_COLUMNS}
            row.update(id=i, name=f"sim{i}", workflow="scan", app_id=app.id, params=json.dumps({"x": i}),
                       num_nodes=1, ranks_per_node=1, threads_per_rank=1, gpus_per_rank=0, max_retries=3,
                       retry_count=0, state="PREPROCESSED", created_at=now, updated_at=now)
            jobs_rows.append(tuple(row[c] for c in JOB_INSERT_COLUMNS))
            ev_rows += [(i, "CREATED", "READY", now, "bench", "created"), (i, "READY", "STAGED_IN", now, "bench", None),
                        (i, "STAGED_IN", "PREPROCESSED", now, "bench", None)]
        t0 = time.perf_counter()
        with db.write(ws.engine) as conn:
            db.bulk_insert(conn, "jobs", JOB_INSERT_COLUMNS, jobs_rows)
            db.bulk_insert(conn, "events", EVENT_INSERT_COLUMNS, ev_rows)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--target", type=float, default=5.0, help="seconds (pass/fail line)")
    ap.add_argument("--profile", action="store_true", help="one cProfile'd add_jobs run, then exit")
    ap.add_argument("--base-rev", default="none",
                    help="git revision whose src/sluice/api.py add_jobs is a second baseline, or 'none'; only "
                         "revisions from before the sluice.api package (c050221 and older) have that file, and "
                         "they import sluice.db, so run them from a checkout of their own (bench/README.md)")
    ap.add_argument("--index-costs", action="store_true",
                    help="time add_jobs without ix_jobs_name / ix_events_to_state_timestamp vs with them")
    add_db_arg(ap)
    a = ap.parse_args()
    if a.profile:
        run_add(a, profile=True)
        return
    load0 = load()
    if a.index_costs:
        variants = {"all indexes": (), "no ix_jobs_name": ("ix_jobs_name",),
                    "no ix_events_to_state_timestamp": ("ix_events_to_state_timestamp",)}
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(a.runs):
            for k, drop in variants.items():
                times[k].append(run_add(a, drop=drop))
        base = median(times["all indexes"])
        res = {"bench": "add-index-costs", "db": backend_name(a.db), "n": a.n, "runs": a.runs,
               **{k: {"s_median": round(median(v), 3), "ratio_to_all": round(median(v) / base, 3)}
                  for k, v in times.items()}, "load_before": load0, "load_after": load()}
        print(json.dumps(res) if a.json else "; ".join(
            f"{k}: {median(v):.2f} s ({median(v) / base:.2f}x)" for k, v in times.items())
            + f" [{res['db']}, {a.n} jobs, median of {a.runs}; load {load0} -> {res['load_after']}]")
        return
    old = None if a.base_rev == "none" else old_api(a.base_rev)
    adds, floors, olds = [], [], []
    for _ in range(a.runs):  # interleaved, so drift hits all alike
        floors.append(run_floor(a))
        adds.append(run_add(a))
        if old is not None:
            olds.append(run_add(a, api=old))
    ratios = [x / f for x, f in zip(adds, floors, strict=True)]
    res = {"bench": "add", "db": backend_name(a.db), "n": a.n, "runs": a.runs,
           "add_s_median": round(median(adds), 3), "add_s": [round(x, 3) for x in adds],
           "jobs_per_s": round(a.n / median(adds)), "floor_s_median": round(median(floors), 3),
           "ratio_to_floor": round(median(ratios), 2), "target_s": a.target,
           "pass": median(adds) < a.target, "load_before": load0, "load_after": load()}
    if olds:
        res.update(base_rev=a.base_rev, old_s_median=round(median(olds), 3),
                   ratio_new_to_old=round(median([x / o for x, o in zip(adds, olds, strict=True)]), 2))
    print(json.dumps(res) if a.json else
          f"add_jobs {a.n} jobs on {res['db']}: {res['add_s_median']:.2f} s median of {a.runs} "
          f"({res['jobs_per_s']}/s), {res['ratio_to_floor']:.2f}x the raw-executemany floor "
          f"({res['floor_s_median']:.2f} s)"
          + (f", {res['ratio_new_to_old']:.2f}x the time of add_jobs@{a.base_rev} ({res['old_s_median']:.2f} s)"
             if olds else "")
          + f"; target < {a.target:g} s: {'PASS' if res['pass'] else 'FAIL'} (load {load0} -> {res['load_after']})")


if __name__ == "__main__":
    main()
