"""The launcher's main loop asks for short CPU slices (latency.py) and keeps them to itself.

Read back from the kernel: /proc/<pid>/task/<tid>/sched shows each thread's slice. Skipped where the kernel
has no per-thread slices (before Linux 6.12) or the call does not exist.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from sluice.api import Workspace
from sluice.launcher import latency
from sluice.launcher.latency import SHORT_NS, prompt_wakeups
from sluice.launcher.launcher import Launcher, Options

PY = sys.executable


def _kernel_takes_slices() -> bool:
    result: list[bool] = []

    def probe() -> None:  # in a throw-away thread: nothing to restore
        with prompt_wakeups() as took:
            result.append(took and latency.slice_ns() == SHORT_NS)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return result[0]


pytestmark = pytest.mark.skipif(not _kernel_takes_slices(), reason="no per-thread CPU slices on this kernel")

SLICES = """
import glob, os, re
def sl(p):
    return int(re.search(r"se\\.slice\\s*:\\s*(\\d+)", open(p).read()).group(1))
mine = sl("/proc/self/sched")
theirs = sorted(sl(p) for p in glob.glob(f"/proc/{os.getppid()}/task/*/sched"))
print(mine, *theirs)
"""


def test_the_block_shortens_the_slice_and_restores_it_after() -> None:
    before = latency.slice_ns()
    with prompt_wakeups() as took:
        assert took
        assert latency.slice_ns() == SHORT_NS
        # neither a thread nor a process started meanwhile inherits it
        seen: list[int | None] = []
        t = threading.Thread(target=lambda: seen.append(latency.slice_ns()))
        t.start()
        t.join()
        child = subprocess.run([PY, "-c", "from sluice.launcher import latency; print(latency.slice_ns())"],
                               capture_output=True, text=True, check=True)
    assert seen == [before]
    assert int(child.stdout) == before
    assert latency.slice_ns() == before


def test_launcher_loop_runs_short_sliced_and_its_jobs_do_not(sqlite_ws: Workspace) -> None:
    default = latency.slice_ns()
    sqlite_ws.add_app("slices", f"{PY} -c {{code}}")
    j = sqlite_ws.add_job("s", "slices", params={"code": SLICES})
    s = Launcher(sqlite_ws, Options(idle_timeout=1, status=False)).run()
    assert s.finished == 1, s.line()
    out = (sqlite_ws.job(j.id).path / "s.out").read_text().split()
    mine, theirs = int(out[0]), [int(x) for x in out[1:]]
    assert mine == default  # the job runs as any process would
    assert SHORT_NS in theirs  # the launcher's loop thread, while the job ran
    assert latency.slice_ns() == default  # the caller's thread got its slice back


def test_zero_leaves_the_kernel_default(sqlite_ws: Workspace) -> None:
    sqlite_ws.add_app("slices", f"{PY} -c {{code}}")
    j = sqlite_ws.add_job("s", "slices", params={"code": SLICES})
    Launcher(sqlite_ws, Options(idle_timeout=1, status=False, loop_slice_us=0)).run()
    out = (sqlite_ws.job(j.id).path / "s.out").read_text().split()
    assert SHORT_NS not in [int(x) for x in out[1:]]


def test_a_thread_under_another_policy_is_left_alone() -> None:
    result: list[tuple[bool, int]] = []

    def batch() -> None:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        with prompt_wakeups() as took:
            result.append((took, os.sched_getscheduler(0)))

    t = threading.Thread(target=batch)
    t.start()
    t.join()
    assert result == [(False, os.SCHED_BATCH)]
