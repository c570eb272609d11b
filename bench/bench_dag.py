#!/usr/bin/env python3
"""A 100,000-edge DAG: add it and check it for cycles (target: under 5 s).

Shape: LAYERS+1 layers of WIDTH jobs (default 51 x 1,000: 1,000 roots, 50,000 jobs with 2 parents each in the
layer above, so 100,000 edges). Two ways, each timed from nothing to committed:
  * layers:   one add_jobs call per layer, each job naming its 2 parents (no cycle check needed: new jobs
              cannot close a cycle), 51 calls;
  * deps:     every job in one add_jobs call, then ONE add_dependencies call with all 100,000 edges (runs
              _check_acyclic over the whole graph, moves the 50,000 children to AWAITING_PARENTS).
Baseline in the same run: add_jobs of the same 51,000 jobs without edges (the ratio shows what the edges cost).
Then a cycle is offered (last layer -> a root) and must be refused; its check time is reported.

    bench_dag.py [--width 1000] [--layers 50] [--runs 3] [--db sqlite|pg|mariadb|URL] [--dir DIR] [--json]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import time

from _common import add_db_arg, backend_name, load, median, workspace

from sluice.errors import UserError


def spec(i: int, parents: list[int] | None = None) -> dict:
    d = {"name": f"n{i}", "app": "sim", "workflow": "dag", "params": {"x": i}}
    if parents:
        d["parents"] = parents
    return d


def parents_of(k: int, width: int) -> tuple[int, int]:
    return k, (k + 1) % width  # indexes within the layer above


def run(a: argparse.Namespace, mode: str, profile: bool = False) -> dict:
    w, L = a.width, a.layers
    with workspace(a.db, a.dir) as ws:
        ws.add_app("sim", "/bin/echo {x}")
        prof = cProfile.Profile() if profile else None
        if prof:
            prof.enable()
        t0 = time.perf_counter()
        out: dict = {}
        if mode == "layers":
            prev = ws.add_jobs([spec(i) for i in range(w)])
            for layer in range(1, L + 1):
                prev = ws.add_jobs([spec(layer * w + k, [prev[p] for p in parents_of(k, w)]) for k in range(w)])
            last = prev
        else:
            ids = ws.add_jobs([spec(i) for i in range((L + 1) * w)])
            if mode == "deps":
                t1 = time.perf_counter()
                edges = [(ids[(layer - 1) * w + p], ids[layer * w + k])
                         for layer in range(1, L + 1) for k in range(w) for p in parents_of(k, w)]
                ws.add_dependencies(edges)
                out["add_dependencies_s"] = time.perf_counter() - t1
            last = ids[L * w:]
        out["total_s"] = time.perf_counter() - t0
        if prof:
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
        if mode != "jobs-only":
            c = ws.summary()
            assert c.get("AWAITING_PARENTS") == L * w, c
            t1 = time.perf_counter()
            try:
                ws.add_dependency(last[0], last[0] - L * w)  # a leaf becomes parent of a root: a cycle
                raise AssertionError("cycle accepted")
            except UserError as e:
                assert "cycle" in str(e), e
            out["cycle_refused_s"] = time.perf_counter() - t1
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--layers", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--target", type=float, default=5.0)
    ap.add_argument("--profile", choices=["layers", "deps"], help="one cProfile'd run of that mode, then exit")
    add_db_arg(ap)
    a = ap.parse_args()
    if a.profile:
        run(a, a.profile, profile=True)
        return
    load0 = load()
    res_runs: dict[str, list[dict]] = {"jobs-only": [], "layers": [], "deps": []}
    for _ in range(a.runs):
        for m in res_runs:
            res_runs[m].append(run(a, m))
    base = median([r["total_s"] for r in res_runs["jobs-only"]])
    edges = a.layers * a.width * 2
    res = {"bench": "dag", "db": backend_name(a.db), "jobs": (a.layers + 1) * a.width, "edges": edges,
           "runs": a.runs, "jobs_only_s": round(base, 3), "target_s": a.target}
    for m in ("layers", "deps"):
        tot = median([r["total_s"] for r in res_runs[m]])
        res[m] = {"total_s": round(tot, 3), "ratio_to_jobs_only": round(tot / base, 2), "pass": tot < a.target,
                  "cycle_refused_s": round(median([r["cycle_refused_s"] for r in res_runs[m]]), 3)}
    res["deps"]["add_dependencies_s"] = round(median([r["add_dependencies_s"] for r in res_runs["deps"]]), 3)
    res["load_before"], res["load_after"] = load0, load()
    if a.json:
        print(json.dumps(res))
        return
    ly, dp = res["layers"], res["deps"]
    print(f"DAG {res['jobs']} jobs / {edges} edges on {res['db']}: by layers {ly['total_s']:.2f} s "
          f"({ly['ratio_to_jobs_only']:.2f}x jobs alone) {'PASS' if ly['pass'] else 'FAIL'}; jobs then one "
          f"add_dependencies {dp['total_s']:.2f} s ({dp['ratio_to_jobs_only']:.2f}x; add_dependencies "
          f"{dp['add_dependencies_s']:.2f} s) {'PASS' if dp['pass'] else 'FAIL'}; cycle refused in "
          f"{dp['cycle_refused_s']:.2f} s; jobs alone {base:.2f} s; target < {a.target:g} s "
          f"[median of {a.runs}; load {load0} -> {res['load_after']}]")


if __name__ == "__main__":
    main()
