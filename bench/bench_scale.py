#!/usr/bin/env python3
"""The control plane at scale: simulated launchers (sluice.launcher.simulate) on N fake nodes of C cores.

Every task is a timer (`--duration` seconds, 0 by default); the database, claims, packing, the writer, events,
heartbeats and recovery are the real ones. Each run builds a fresh workspace of `--jobs` jobs with the real
`add_jobs` (100,000 at a time), runs the launcher(s), and reads what happened from the events table:

* jobs/s: jobs / (last job's end - first job's start), from the events (start-up and the final idle check
  excluded); `run()`'s wall time is printed too;
* slot utilization: busy slot-seconds / (slots x time), in steady state (from the moment every slot had been
  started once to the last start, i.e. without the first fill and the final drain), the same from the moment
  every slot had been started twice (without the first wave of restarts, when jobs that all started together
  end together), and over the whole run; how long a freed slot stood empty (the k-th end to the
  (k + slots)-th start) in steady state; with `--timeline`, ends, starts and idle slots each quarter second;
* launcher CPU per job: `time.process_time()` of the launcher process(es) during `run()`, all threads, over the
  jobs (with SQLite the database's work is in that process; a PostgreSQL server's CPU is not counted);
* exactly once: every job has exactly one JOB_FINISHED event.

`--launchers L` runs L launcher processes at once on one database (PostgreSQL), each with N/L of the nodes.
`--mpi-mix` runs MPI mode with a mix of 1-, 8-, 128- and 1,024-node jobs (durations uniform in [D/2, 3D/2], D
= `--duration`, default 10 s here) and reports node utilization against the ideal bound of the same work:
sum of node-seconds / (nodes x makespan), against the same with the shortest makespan possible,
max(node-seconds / nodes, longest job).

    bench_scale.py --nodes 1024 --cores 64 --jobs 1000000 [--duration 0] [--db sqlite|pg|URL] [--dir /dev/shm]
                   [--jitter 0.1] [--launchers 16] [--mpi-mix] [--runs 3] [--json]
    bench_scale.py --matrix [--grid-jobs 10000,100000,1000000] [--grid-nodes 64,256,1024] [--plot scale.png]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import add_db_arg, backend_name, load, workspace
from sqlalchemy import text

from sluice.api import Workspace
from sluice.launcher.launcher import Launcher, Options
from sluice.launcher.simulate import simulated

MIX = ((1, 0.70), (8, 0.22), (128, 0.07), (1024, 0.01))
"""(nodes, share of the jobs) of --mpi-mix."""


def build(ws: Workspace, a: argparse.Namespace) -> float:
    """The jobs, added the real way; the seconds it took."""
    ws.add_app("sim", "simulated-task --seed {seed}")  # never run: a simulated task is a timer
    rng = random.Random(1)
    t0 = time.perf_counter()
    for start in range(0, a.jobs, 100_000):
        specs: list[dict[str, Any]] = []
        for i in range(start, min(a.jobs, start + 100_000)):
            spec: dict[str, Any] = {"name": f"s{i}", "app": "sim", "params": {"seed": i}}
            if a.jitter and not a.mpi_mix:  # durations spread as real ones are: no waves of ends at once
                spec["data"] = {"sim_s": round(rng.uniform(1 - a.jitter, 1 + a.jitter) * a.duration, 3)}
            if a.mpi_mix:  # sizes the allocation can hold (a wider job would be given back, never run)
                mix = [(m, w) for m, w in MIX if m <= a.nodes]
                n = rng.choices([m for m, _ in mix], [w for _, w in mix])[0]
                spec["num_nodes"] = n
                spec["data"] = {"sim_s": round(rng.uniform(0.5, 1.5) * a.duration, 3)}
            specs.append(spec)
        ws.add_jobs(specs)
    return time.perf_counter() - t0


def options(a: argparse.Namespace) -> Options:
    return Options(simulate=True, sim_duration_s=a.duration, status=False, job_mode="mpi" if a.mpi_mix else "serial")


def run_one(ws: Workspace, a: argparse.Namespace, nodes: int, prefix: str = "sim") -> dict[str, Any]:
    c0, t0 = time.process_time(), time.perf_counter()
    s = Launcher(ws, options(a), alloc=simulated(nodes, a.cores, prefix=prefix)).run()
    return {"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - t0, "started": s.started,
            "finished": s.finished, "line": f"{s.line()}; {s.handed_over} started as standbys"}


def run_many(ws: Workspace, a: argparse.Namespace) -> list[dict[str, Any]]:
    """L launcher processes at once, each on its share of the nodes; what each said."""
    share = [a.nodes // a.launchers + (1 if k < a.nodes % a.launchers else 0) for k in range(a.launchers)]
    env = dict(os.environ, SLUICE_WORKSPACE=str(ws.path))
    procs = [subprocess.Popen([sys.executable, __file__, "--child", str(ws.path), "--nodes", str(n), "--cores",
                               str(a.cores), "--duration", str(a.duration), "--prefix", f"l{k}n",
                               *(["--mpi-mix"] if a.mpi_mix else [])], env=env, stdout=subprocess.PIPE, text=True)
             for k, n in enumerate(share)]
    out = []
    for p in procs:
        stdout, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"a launcher process failed ({p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def spans(ws: Workspace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(job ids, start, end) of every run, from the RUNNING and RUN_DONE events, by job id then time."""
    with ws.engine.connect() as c:
        rows = c.execute(text("SELECT job_id, to_state, timestamp FROM events "
                              "WHERE to_state IN ('RUNNING', 'RUN_DONE', 'RUN_ERROR', 'RUN_TIMEOUT') "
                              "ORDER BY job_id, id")).all()
    ids, starts, ends = [], [], []
    for jid, st, ts in rows:
        if st == "RUNNING":
            ids.append(jid)
            starts.append(ts)
            ends.append(np.nan)
        elif ids and ids[-1] == jid:
            ends[-1] = ts
    return np.array(ids), np.array(starts, dtype=float), np.array(ends, dtype=float)


def once(ws: Workspace, n: int) -> tuple[bool, str]:
    """Whether every job has exactly one JOB_FINISHED event, and what the table says."""
    with ws.engine.connect() as c:
        total, distinct = c.execute(text("SELECT count(*), count(DISTINCT job_id) FROM events "
                                         "WHERE to_state = 'JOB_FINISHED'")).one()
        done = c.execute(text("SELECT count(*) FROM jobs WHERE state = 'JOB_FINISHED'")).scalar()
    return (total == distinct == done == n), f"{total} JOB_FINISHED events of {distinct} jobs, {done} jobs done"


def busy(starts: np.ndarray, ends: np.ndarray, width: np.ndarray, lo: float, hi: float) -> float:
    """Slot-seconds (or node-seconds) used within [lo, hi]."""
    return float((np.clip(np.minimum(ends, hi) - np.maximum(starts, lo), 0, None) * width).sum())


def measure(ws: Workspace, a: argparse.Namespace) -> dict[str, Any]:
    ids, starts, ends = spans(ws)
    ends = np.where(np.isnan(ends), starts, ends)
    first, last = float(starts.min()), float(ends.max())
    res: dict[str, Any] = {"span_s": last - first, "rate": a.jobs / max(1e-9, last - first), "runs": len(ids)}
    if a.mpi_mix:
        with ws.engine.connect() as c:
            rows = c.execute(text("SELECT id, num_nodes, data FROM jobs")).all()
        size = {j: n for j, n, _ in rows}
        used = busy(starts, ends, np.array([size[j] for j in ids.tolist()]), first, last)
        work = [(n, float((json.loads(d) if isinstance(d, str) else d)["sim_s"])) for _, n, d in rows]
        need = sum(n * s for n, s in work)
        bound = max(need / a.nodes, max(s for _, s in work))
        res.update(node_util=used / (a.nodes * (last - first)), ideal_util=need / (a.nodes * bound),
                   makespan_s=last - first, ideal_makespan_s=bound, node_seconds=used)
        return res
    slots = a.nodes * a.cores
    width = np.ones(len(ids))
    res["util_all"] = busy(starts, ends, width, first, last) / (slots * max(1e-9, last - first))
    order = np.sort(starts)
    if len(order) > slots and order[-1] > order[slots - 1]:  # steady state: every slot started once .. last start
        lo, hi = float(order[slots - 1]), float(order[-1])
        res["util_steady"] = busy(starts, ends, width, lo, hi) / (slots * (hi - lo))
        res["steady_window_s"] = hi - lo
    if len(order) > 2 * slots and order[-1] > order[2 * slots - 1]:  # the same from the second round on
        lo, hi = float(order[2 * slots - 1]), float(order[-1])
        res["util_round2"] = busy(starts, ends, width, lo, hi) / (slots * (hi - lo))
    if len(order) > slots:
        ended = np.sort(ends)
        res.update(refill_lag(order, ended, slots))
        if a.timeline:
            print(timeline(order, ended, slots), file=sys.stderr)
    return res


def refill_lag(s: np.ndarray, e: np.ndarray, slots: int) -> dict[str, float]:
    """How long a slot stood empty, from the k-th end to the (k + slots)-th start (the one that took a slot
    back, when every slot is busy before the refill), over the steady state: mean, median, p90, max (ms).
    `s` and `e`: every start and every end, each sorted."""
    k = np.arange(len(s) - slots)
    lag = s[k + slots] - e[k]
    lag = lag[(e[k] >= s[slots - 1]) & (s[k + slots] <= s[-1])]
    if not len(lag):
        return {}
    return {"lag_mean_ms": 1e3 * float(lag.mean()), "lag_p50_ms": 1e3 * float(np.median(lag)),
            "lag_p90_ms": 1e3 * float(np.percentile(lag, 90)), "lag_max_ms": 1e3 * float(lag.max())}


def timeline(starts: np.ndarray, ends: np.ndarray, slots: int, step: float = 0.25) -> str:
    """Ends, starts and idle slots in each `step` seconds from the first start (--timeline), where a wave
    of ends and the starts that follow it can be read. `starts` and `ends` sorted, as refill_lag's."""
    t0 = float(starts[0])
    s, e = starts - t0, ends - t0
    edges = np.arange(0.0, float(e.max()) + step, step)
    ns, ne = np.histogram(s, edges)[0], np.histogram(e, edges)[0]
    idle = slots - (np.searchsorted(s, edges[1:]) - np.searchsorted(e, edges[1:]))
    return "\n".join(f"{t:8.2f} s  ends {b:7d}  starts {a:7d}  idle {i:7d}"
                     for t, a, b, i in zip(edges[:-1], ns, ne, idle, strict=True) if a or b or i)


def trial(a: argparse.Namespace) -> dict[str, Any]:
    """One run on a fresh workspace: build, run, read the events."""
    load0 = load()
    with workspace(a.db, a.dir) as ws:
        build_s = build(ws, a)
        t0 = time.perf_counter()
        runs = [run_one(ws, a, a.nodes)] if a.launchers == 1 else run_many(ws, a)
        wall = time.perf_counter() - t0
        ok, said = once(ws, a.jobs)
        res = measure(ws, a)
    cpu = sum(r["cpu_s"] for r in runs)
    res.update(bench="scale", db=backend_name(a.db), nodes=a.nodes, cores=a.cores, jobs=a.jobs,
               duration_s=a.duration, launchers=a.launchers, mpi_mix=a.mpi_mix, build_s=round(build_s, 1),
               run_wall_s=round(wall, 2), cpu_per_job_us=1e6 * cpu / a.jobs, exactly_once=ok, events=said,
               load_before=load0, load_after=load(), lines=[r["line"] for r in runs])
    return res


def matrix(a: argparse.Namespace) -> None:
    """jobs/s and launcher CPU per job at each of --grid-jobs x --grid-nodes (zero-length jobs, one launcher):
    a table on stdout and the plot `--plot` (PNG). Smaller runs are repeated (--runs, up to 3) and the median
    kept; the largest runs once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    jobs = [int(x) for x in a.grid_jobs.split(",")]
    nodes = [int(x) for x in a.grid_nodes.split(",")]
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for n in nodes:
        for m in jobs:
            b = argparse.Namespace(**{**vars(a), "jobs": m, "nodes": n})
            trials = [trial(b) for _ in range(1 if m == max(jobs) else max(1, min(3, a.runs)))]
            cells[(n, m)] = r = sorted(trials, key=lambda t: t["rate"])[len(trials) // 2]
            print(f"{n:5d} nodes x {a.cores} cores, {m:8d} jobs: {r['rate']:7.0f} jobs/s, "
                  f"{r['cpu_per_job_us']:6.1f} us/job, exactly once: {r['exactly_once']} [load {r['load_after']}]",
                  flush=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for n in nodes:
        ax1.plot(jobs, [cells[(n, m)]["rate"] for m in jobs], marker="o", label=f"{n} x {a.cores}")
        ax2.plot(jobs, [cells[(n, m)]["cpu_per_job_us"] for m in jobs], marker="o", label=f"{n} x {a.cores}")
    for ax, what in ((ax1, "jobs/s"), (ax2, "launcher CPU per job (us)")):
        ax.set_xscale("log")
        ax.set_xlabel("jobs (zero-length, simulated)")
        ax.set_ylabel(what)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(title="nodes x cores")
    fig.suptitle(f"one simulated launcher, {backend_name(a.db)}, this 2-core VM")
    fig.tight_layout()
    fig.savefig(a.plot, dpi=100)
    print("| nodes \\ jobs | " + " | ".join(f"{m:,}" for m in jobs) + " |")
    print("|---|" + "---|" * len(jobs))
    for n in nodes:
        print(f"| {n} x {a.cores} | " + " | ".join(f"{cells[(n, m)]['rate']:,.0f}/s, "
                                                   f"{cells[(n, m)]['cpu_per_job_us']:.0f} us" for m in jobs) + " |")


def child(a: argparse.Namespace) -> None:
    ws = Workspace.open(a.child)
    print(json.dumps(run_one(ws, a, a.nodes, a.prefix)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--cores", type=int, default=64)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--duration", type=float, default=None, help="simulated seconds a job (default 0; mpi-mix 10)")
    ap.add_argument("--jitter", type=float, default=0.0,
                    help="durations uniform in [D(1-J), D(1+J)] instead of all D (serial mode)")
    ap.add_argument("--launchers", type=int, default=1)
    ap.add_argument("--mpi-mix", action="store_true")
    ap.add_argument("--runs", type=int, default=1, help="repeat on fresh workspaces; the median run is reported")
    ap.add_argument("--matrix", action="store_true", help="the grid below instead of one shape; writes --plot")
    ap.add_argument("--timeline", action="store_true",
                    help="print ends, starts and idle slots each quarter second to stderr (serial mode)")
    ap.add_argument("--grid-jobs", default="10000,100000,1000000")
    ap.add_argument("--grid-nodes", default="64,256,1024")
    ap.add_argument("--plot", default=str(Path(__file__).with_name("scale.png")))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default="sim", help=argparse.SUPPRESS)
    add_db_arg(ap)
    a = ap.parse_args()
    if a.duration is None:
        a.duration = 10.0 if a.mpi_mix else 0.0
    if a.child:
        child(a)
        return
    if a.matrix:
        matrix(a)
        return
    if a.launchers > 1 and backend_name(a.db) == "sqlite":
        print("note: several launchers on one SQLite file share its one write lock", file=sys.stderr)
    trials = [trial(a) for _ in range(a.runs)]
    res = sorted(trials, key=lambda r: r["rate"])[len(trials) // 2]  # the median run, by rate
    res["rates"] = [round(r["rate"]) for r in trials]
    res["cpus_us"] = [round(r["cpu_per_job_us"], 1) for r in trials]
    res["exactly_once"] = all(r["exactly_once"] for r in trials)
    ok, said, wall, build_s, load0 = res["exactly_once"], res["events"], res["run_wall_s"], res["build_s"], \
        res["load_before"]
    runs = res.pop("lines")
    if a.json:
        print(json.dumps(res))
        return
    for line in runs if a.launchers <= 4 else []:
        print(line)
    spread = f" +-{a.jitter:.0%}" if a.jitter else ""
    shape = (f"{a.jobs} jobs of {a.duration:g} s{spread} on {a.nodes} x {a.cores} simulated, {res['db']}, "
             f"{a.launchers} launcher(s)")
    if a.mpi_mix:
        util = (f"node utilization {res['node_util']:.1%} vs ideal bound {res['ideal_util']:.1%} "
                f"(makespan {res['makespan_s']:.1f} s vs {res['ideal_makespan_s']:.1f} s)")
    else:
        steady = f"{res['util_steady']:.2%} steady state ({res['steady_window_s']:.1f} s), " \
            if "util_steady" in res else ""
        if "util_round2" in res:
            steady += f"{res['util_round2']:.2%} from the second round, "
        if "lag_mean_ms" in res:
            steady += (f"a freed slot empty {res['lag_mean_ms']:.0f} ms on average (median {res['lag_p50_ms']:.0f}, "
                       f"p90 {res['lag_p90_ms']:.0f}, max {res['lag_max_ms']:.0f}), ")
        util = f"slot utilization {steady}{res['util_all']:.2%} whole run"
    print(f"{shape}: {res['rate']:.0f} jobs/s over {res['span_s']:.1f} s (run() {wall:.1f} s); {util}; launcher CPU "
          f"{res['cpu_per_job_us']:.1f} us/job; exactly once: {'yes' if ok else 'NO'} ({said}); built in "
          f"{build_s:.0f} s" + (f"; median of {a.runs} runs: {res['rates']} jobs/s, {res['cpus_us']} us/job"
                                if a.runs > 1 else "") + f" [load {load0} -> {res['load_after']}]")


if __name__ == "__main__":
    main()
