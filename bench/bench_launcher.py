#!/usr/bin/env python3
"""Launcher throughput: N no-op jobs from READY to JOB_FINISHED, as a ratio to the machine's spawn ceiling.

Each trial: a fresh workspace with N jobs of app `/bin/true` (each job gets its own working directory and
stdout/stderr files, made by the launcher), then `Launcher(ws, Options(idle_timeout=1, status=False)).run()`
in serial mode on the local machine (capacity = cores). Rate = N / (wall time of run()). The ceiling
(`bench/spawn_ceiling.py`: bare posix_spawn loop, CONC at once) is measured in the same run,
interleaved: ceiling, launcher, ceiling, ..., and the ratio uses the median ceiling.

Also, in the same run:
  * --parsl: Parsl HighThroughputExecutor, 2 workers, the same N `true` bash apps (in a subprocess);
  * --pytask: jobs running `sys.executable -c pass` vs the bare loop with that command (--pytask-n jobs,
    --runs interleaved pairs, medians);
  * launcher CPU per job: the launcher process's own CPU time (getrusage SELF: all its threads, not its
    children) during run(), divided by N;
  * --rss: peak RSS of a launcher process (subprocess) over a database with --rss-jobs queued jobs, run until
    it has finished --rss-run of them, vs the same process that only opens the workspace.

  * the share of starts handed over by standby tasks (the spawn engine starts the next job the moment a task
    ends, launcher/starts.py); --no-standby sends every start through the launcher's loop, for A/B runs.

    bench_launcher.py [--n 10000] [--runs 3] [--db sqlite|pg|mariadb|URL] [--dir DIR (e.g. /dev/shm)]
                      [--parsl] [--pytask] [--rss] [--profile] [--no-standby] [--json]
"""
from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import textwrap
import time

from _common import ROOT, add_db_arg, backend_name, load, median, workspace
from spawn_ceiling import ceiling

from sluice import environ
from sluice.launcher.launcher import Launcher, Options
from sluice.launcher.spawn import LocalSpawner

CONC = os.cpu_count() or 1


def cpu_self() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, all threads, not its children."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def launcher_trial(a: argparse.Namespace, command: str, n: int, profile: bool = False) -> dict:
    with workspace(a.db, a.dir) as ws:
        ws.add_app("noop", command)
        ws.add_jobs([{"name": f"t{i}", "app": "noop"} for i in range(n)])
        prof = cProfile.Profile() if profile else None
        c0, t0 = cpu_self(), time.perf_counter()
        if prof:
            prof.enable()
        # leaves once every job has ended (no idle wait)
        s = Launcher(ws, Options(status=False, standby=not a.no_standby)).run()
        if prof:
            prof.disable()
        dt, c1 = time.perf_counter() - t0, cpu_self()
        user, system = c1[0] - c0[0], c1[1] - c0[1]
        done = ws.count(state="JOB_FINISHED")
        if done != n:
            raise RuntimeError(f"only {done} of {n} jobs finished: {ws.summary()} ({s.line()})")
        if prof:
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return {"rate": n / dt, "seconds": dt, "cpu_per_job_ms": 1000 * (user + system) / n,
                "user_per_job_ms": 1000 * user / n, "sys_per_job_ms": 1000 * system / n, "reason": s.reason,
                "handed_over": s.handed_over / n}


PARSL = textwrap.dedent("""
    import json, shutil, sys, tempfile, time
    t_start = time.perf_counter()
    import parsl
    from parsl.app.app import bash_app
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider
    n, workers = int(sys.argv[1]), int(sys.argv[2])
    run_dir = tempfile.mkdtemp(prefix="bench_parsl.")
    cfg = Config(executors=[HighThroughputExecutor(label="htex", max_workers_per_node=workers, address="127.0.0.1",
                                                   provider=LocalProvider(init_blocks=1, max_blocks=1))],
                 run_dir=run_dir)
    dfk = parsl.load(cfg)

    @bash_app
    def noop():
        return "true"

    t0 = time.perf_counter()
    futs = [noop() for _ in range(n)]
    futs[0].result()
    t_first = time.perf_counter() - t0
    for f in futs:
        f.result()
    dt = time.perf_counter() - t0
    dfk.cleanup()
    shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps({"rate": n / dt, "seconds": dt, "first_result_s": t_first,
                      "with_startup_s": time.perf_counter() - t_start}))
""")


def parsl_trial(n: int) -> dict:
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    p = subprocess.run([sys.executable, "-c", PARSL, str(n), str(CONC)], capture_output=True, text=True,
                       timeout=600, env=env)  # HTEX starts interchange.py / process_worker_pool.py from PATH
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


RSS = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {src!r})
    from sluice.api import Workspace
    ws = Workspace.open(sys.argv[1])
    if sys.argv[2] != "0":
        from sluice.launcher.launcher import Launcher, Options
        Launcher(ws, Options(idle_timeout=1, status=False, max_jobs=int(sys.argv[2]))).run()
    # VmHWM, not getrusage().ru_maxrss: Linux keeps ru_maxrss across execve (it would report the parent's peak)
    hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    print(json.dumps({{"maxrss_mib": hwm / 1024,
                      "finished": ws.count(state="JOB_FINISHED")}}))
""").format(src=str(ROOT / "src"))


def rss_probe(a: argparse.Namespace) -> dict:
    with workspace(a.db, a.dir) as ws:
        ws.add_app("noop", "/bin/true")
        for k in range(0, a.rss_jobs, 100_000):
            ws.add_jobs([{"name": f"t{i}", "app": "noop"} for i in range(k, min(a.rss_jobs, k + 100_000))])
        out = {}
        for label, run in (("open_only", 0), ("launcher", a.rss_run)):
            p = subprocess.run([sys.executable, "-c", RSS, str(ws.path), str(run)], capture_output=True,
                               text=True, check=True)
            r = json.loads(p.stdout.strip().splitlines()[-1])
            if r["finished"] != run:
                raise RuntimeError(f"RSS probe: {r['finished']} jobs finished, expected {run}")
            out[label] = r["maxrss_mib"]
        return {"queued": a.rss_jobs, "ran": a.rss_run, "launcher_maxrss_mib": round(out["launcher"], 1),
                "open_only_maxrss_mib": round(out["open_only"], 1),
                "ratio": round(out["launcher"] / out["open_only"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parsl", action="store_true")
    ap.add_argument("--pytask", action="store_true")
    ap.add_argument("--pytask-n", type=int, default=1000)
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--rss-jobs", type=int, default=100_000)
    ap.add_argument("--rss-run", type=int, default=2000)
    ap.add_argument("--profile", action="store_true", help="one cProfile'd launcher run (main thread), then exit")
    ap.add_argument("--engine", choices=["c", "python"], help="the spawn engine (default: the launcher's own choice)")
    ap.add_argument("--no-standby", action="store_true",
                    help="every start through the launcher's loop (Options(standby=False)), for A/B runs")
    add_db_arg(ap)
    a = ap.parse_args()
    if a.engine:
        os.environ[environ.SPAWN_ENGINE] = a.engine
    if a.profile:
        print(launcher_trial(a, "/bin/true", a.n, profile=True))
        return
    load0 = load()
    ceiling(["/bin/true"], 200, CONC)  # warm-up
    ceils = [ceiling(["/bin/true"], a.n, CONC)]
    trials, parsls = [], []
    for _ in range(a.runs):
        trials.append(launcher_trial(a, "/bin/true", a.n))
        if a.parsl:
            parsls.append(parsl_trial(a.n))
        ceils.append(ceiling(["/bin/true"], a.n, CONC))
    c = median(ceils)
    rate = median([t["rate"] for t in trials])
    res = {"bench": "launcher", "db": backend_name(a.db), "dir": a.dir or tempfile.gettempdir(), "n": a.n,
           "conc": CONC, "runs": a.runs, "ceiling_median": round(c), "ceilings": [round(x) for x in ceils],
           "launcher_rate_median": round(rate), "launcher_rates": [round(t["rate"]) for t in trials],
           "ratio": round(rate / c, 3),
           "cpu_per_job_ms": round(median([t["cpu_per_job_ms"] for t in trials]), 3),
           "user_per_job_ms": round(median([t["user_per_job_ms"] for t in trials]), 3),
           "sys_per_job_ms": round(median([t["sys_per_job_ms"] for t in trials]), 3),
           "handed_over": round(median([t["handed_over"] for t in trials]), 3), "standby": not a.no_standby}
    if a.parsl:
        ok = [p for p in parsls if "rate" in p]
        if ok:
            pr = median([p["rate"] for p in ok])
            res["parsl"] = {"rate_median": round(pr), "ratio_to_ceiling": round(pr / c, 3),
                            "launcher_over_parsl": round(rate / pr, 2),
                            "first_result_s": round(median([p["first_result_s"] for p in ok]), 2),
                            "with_startup_s": round(median([p["with_startup_s"] for p in ok]), 2)}
        else:
            res["parsl"] = {"error": parsls[0]["error"]}
    if a.pytask:
        py = [sys.executable, "-c", "pass"]
        pcs, pts = [ceiling(py, a.pytask_n, CONC)], []
        for _ in range(a.runs):  # interleaved like the /bin/true runs: one pair moves +-10% on this machine
            pts.append(launcher_trial(a, f"{sys.executable} -c pass", a.pytask_n)["rate"])
            pcs.append(ceiling(py, a.pytask_n, CONC))
        res["pytask"] = {"n": a.pytask_n, "ceiling": round(median(pcs)), "launcher": round(median(pts)),
                         "ratio": round(median(pts) / median(pcs), 3), "launcher_rates": [round(x) for x in pts],
                         "ceilings": [round(x) for x in pcs]}
    if a.rss:
        res["rss"] = rss_probe(a)
    res["load_before"], res["load_after"] = load0, load()
    if a.json:
        print(json.dumps(res))
        return
    line = (f"launcher ({LocalSpawner().engine} engine) {res['launcher_rate_median']}/s vs spawn ceiling "
            f"{res['ceiling_median']}/s: ratio "
            f"{res['ratio']:.2f} ({a.n} x /bin/true, {res['db']}, workspace under {res['dir']}, runs "
            f"{res['launcher_rates']}, ceilings {res['ceilings']}); launcher CPU {res['cpu_per_job_ms']:.3f} ms/job "
            f"(user {res['user_per_job_ms']:.3f} + sys {res['sys_per_job_ms']:.3f}); "
            + (f"{100 * res['handed_over']:.0f}% of starts handed over by standby" if res["standby"]
               else "standby off"))
    if "parsl" in res:
        p = res["parsl"]
        line += ("; Parsl HTEX " + (f"{p['rate_median']}/s (ratio {p['ratio_to_ceiling']:.2f}; launcher is "
                 f"{p['launcher_over_parsl']:.1f}x Parsl; first result {p['first_result_s']} s)"
                 if "rate_median" in p else f"failed: {p['error']}"))
    if "pytask" in res:
        p = res["pytask"]
        line += (f"; python -c pass: {p['launcher']}/s vs bare {p['ceiling']}/s (ratio {p['ratio']:.2f}; runs "
                 f"{p['launcher_rates']}, bare {p['ceilings']})")
    if "rss" in res:
        r = res["rss"]
        line += (f"; RSS with {r['queued']} queued: {r['launcher_maxrss_mib']} MiB vs {r['open_only_maxrss_mib']} "
                 f"MiB just opening ({r['ratio']}x)")
    print(line + f" [load {load0} -> {res['load_after']}]")


if __name__ == "__main__":
    main()
