"""LocalSpawner's task threads, on both engines (compiled and Python): one per running task and reused, no
signal lost while a task is starting, a task's failure to start is its error event.

The behaviour every spawner shares (exit codes, outputs, timeouts, kills) is tested in test_agent.py.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest
from tests.launcher.test_agent import alive, collect

from sluice import environ
from sluice.launcher import cengine
from sluice.launcher.spawn import LocalSpawner


def _spawn_threads() -> int:
    return sum(t.name.startswith("sluice-spawn-") for t in threading.enumerate())


def _can_compile() -> bool:
    cc = sysconfig.get_config_var("CC") or "cc"
    return shutil.which(cc.split()[0]) is not None and Path(sysconfig.get_paths()["include"], "Python.h").exists()


def test_the_compiled_engine_was_built_and_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip builds it wherever a C compiler and Python's headers exist; it is optional (the Python engine is the
    fallback), so a build that failed where it could succeed would otherwise go unseen."""
    if not _can_compile():
        pytest.skip("no C compiler or Python.h here: the Python engine is the one in use")
    assert cengine.AVAILABLE
    monkeypatch.delenv(environ.SPAWN_ENGINE, raising=False)
    assert LocalSpawner().engine == "c"
    monkeypatch.setenv(environ.SPAWN_ENGINE, "python")
    assert LocalSpawner().engine == "python"
    monkeypatch.setenv(environ.SPAWN_ENGINE, "fortran")
    with pytest.raises(ValueError, match="SLUICE_SPAWN_ENGINE='fortran': use one of c, python"):
        LocalSpawner()


def test_one_thread_per_running_task_and_reused(tmp_path: Path, engine: str) -> None:
    before = _spawn_threads()
    sp = LocalSpawner(engine=engine)
    for i in range(3):  # three at once: three threads
        sp.spawn(i, ["sleep", "0.3"])
    assert sp.running == 3
    assert sp.threads == 3
    assert all(ev["rc"] == 0 for ev in collect(sp, 3).values())
    for i in range(3, 40):  # one at a time afterwards: the same threads serve them
        sp.spawn(i, ["/bin/true"], cwd=str(tmp_path / str(i)), stdout=str(tmp_path / str(i) / "out"))
        assert collect(sp, 1)[i]["rc"] == 0
    assert sp.threads == 3
    if engine == "python":
        assert _spawn_threads() - before == 3
    assert sp.running == 0
    sp.close()
    assert _spawn_threads() == before


def test_a_task_that_cannot_start_is_its_own_error_with_the_reason(tmp_path: Path, engine: str) -> None:
    """Outputs that cannot be opened, a cwd that cannot be made, a NUL in argv: error events naming why, with
    the errno the launcher tells a full disk by; the next task runs."""
    sp = LocalSpawner(engine=engine)
    (tmp_path / "file").write_text("")
    sp.spawn(1, ["/bin/true"], stdout=str(tmp_path / "no" / "such" / "dir" / "out"))
    sp.spawn(2, ["/bin/true"], cwd=str(tmp_path / "file" / "sub"))
    sp.spawn(3, ["/bin/echo", "a\0b"])
    sp.spawn(4, ["/bin/true"], stdout=str(tmp_path / "out"), stderr=str(tmp_path / "file" / "err"))
    sp.spawn(5, ["/bin/true"])
    got = collect(sp, 5)
    assert got[1]["ev"] == "error" and got[1]["errno"] == 2 and "/no/such/dir/out" in got[1]["msg"]
    assert got[2]["ev"] == "error" and got[2]["errno"] == 20 and "Not a directory" in got[2]["msg"]
    assert got[3]["ev"] == "error" and "null byte" in got[3]["msg"]
    assert got[4]["ev"] == "error" and got[4]["errno"] == 20 and "file/err" in got[4]["msg"]
    assert got[5] == {**got[5], "ev": "exit", "rc": 0}
    assert all(ev["msg"].startswith("cannot spawn ['/bin/") for i, ev in got.items() if i < 5)
    assert sp.running == 0
    sp.close()


def test_tasks_get_default_signals_and_no_launcher_descriptors(tmp_path: Path, engine: str) -> None:
    """A task must not inherit Python's ignored SIGPIPE (`yes | head` would never end) or the launcher's open
    files (a database socket held open by a job outliving its launcher)."""
    keep = os.open(tmp_path / "held", os.O_WRONLY | os.O_CREAT)  # not close-on-exec: inheritable
    os.set_inheritable(keep, True)
    sp = LocalSpawner(engine=engine)
    out = str(tmp_path / "out")
    sp.spawn(1, ["sh", "-c", "yes | head -c 1 >/dev/null; grep SigIgn /proc/self/status; ls /proc/self/fd"],
             stdout=out, stderr=out)
    assert collect(sp, 1, timeout=10)[1]["rc"] == 0
    lines = Path(out).read_text().split()
    ignored = int(lines[1], 16)  # SigIgn of the shell: a bit per signal, signal n at bit n - 1
    assert not ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1)), hex(ignored)
    assert sorted(int(x) for x in lines[2:]) == [0, 1, 2, 3]  # stdin/out/err, and the fd ls itself opened
    os.close(keep)
    sp.close()


def test_a_task_runs_under_the_launchers_scheduling_policy(tmp_path: Path, engine: str) -> None:
    """The compiled engine's task threads run as SCHED_BATCH (so they do not preempt the loop that wakes them);
    a task must not inherit that: it gets the launcher's own policy, normal here and batch under `chrt -b`."""
    sp = LocalSpawner(engine=engine)
    show = "import os; print(os.sched_getscheduler(0))"
    for i in range(4):  # several, so reused threads are covered too
        sp.spawn(i, [sys.executable, "-c", show], stdout=str(tmp_path / f"{i}.out"), stderr=str(tmp_path / "err"))
    assert all(e["rc"] == 0 for e in collect(sp, 4, timeout=20).values())
    assert {(tmp_path / f"{i}.out").read_text().strip() for i in range(4)} == {str(os.SCHED_OTHER)}
    sp.close()
    code = ("import sys\nfrom tests.launcher.test_agent import collect\n"
            "from sluice.launcher.spawn import LocalSpawner\n"
            f"sp = LocalSpawner(engine={engine!r}); out = {str(tmp_path / 'b.out')!r}\n"
            f"sp.spawn(1, [sys.executable, '-c', {show!r}], stdout=out, stderr=out)\n"
            "rc = collect(sp, 1, timeout=20)[1]['rc']; sp.close(); print(open(out).read().strip(), rc)\n")
    batch = subprocess.run([sys.executable, "-c", f"import os; os.sched_setscheduler(0, os.SCHED_BATCH, "
                            f"os.sched_param(0)); exec({code!r})"], capture_output=True, text=True, timeout=60,
                           cwd=Path(__file__).resolve().parents[2])
    assert batch.stdout.split() == [str(os.SCHED_BATCH), "0"], batch.stderr


def test_a_kill_sent_while_the_task_is_starting_reaches_it(engine: str) -> None:
    """The kill usually arrives before the task thread has a pid: it must be delivered once there is one."""
    sp = LocalSpawner(kill_grace=5, engine=engine)
    for i in range(20):
        sp.spawn(i, ["sleep", "100"])
        sp.kill(i, signal.SIGTERM)
    t = time.monotonic()
    got = collect(sp, 20, timeout=10)
    assert {ev["rc"] for ev in got.values()} == {-signal.SIGTERM}
    assert time.monotonic() - t < 5  # TERM did it, not the KILL after the grace
    sp.close()


def test_a_wall_time_of_zero_times_out_a_task_still_starting(engine: str) -> None:
    sp = LocalSpawner(kill_grace=0.2, engine=engine)
    sp.spawn(1, ["sleep", "100"], timeout=0.0)
    got = collect(sp, 1)
    assert got[1]["timed_out"] and got[1]["rc"] == -signal.SIGTERM
    sp.close()


def test_close_right_after_many_spawns_leaves_nothing_running(engine: str) -> None:
    before = _spawn_threads()
    sp = LocalSpawner(kill_grace=0.2, engine=engine)
    for i in range(30):
        sp.spawn(i, ["sleep", "100"])
    events = sp.close(grace=0.2)
    exits = {ev["id"]: ev for ev in events if ev["ev"] == "exit"}
    assert sorted(exits) == list(range(30))
    assert all(ev["rc"] in (-signal.SIGTERM, -signal.SIGKILL) for ev in exits.values())
    assert not any(alive(ev["pid"]) for ev in exits.values())
    assert sp.running == 0 and _spawn_threads() == before


def test_an_executable_that_cannot_run_is_the_tasks_error(tmp_path: Path, engine: str) -> None:
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\necho hi\n")  # not executable
    sp = LocalSpawner(engine=engine)
    sp.spawn(1, [str(script)])
    sp.spawn(2, ["/no/such/program"])
    got = collect(sp, 2)
    assert got[1]["ev"] == "error" and "Permission denied" in got[1]["msg"]
    assert got[2]["ev"] == "error" and "No such file" in got[2]["msg"]
    sp.close()


def test_no_thread_left_is_the_tasks_error_not_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of threads (a user's process limit): the task fails with a reason, the caller goes on (the Python
    engine's threads; the compiled engine reports a failed pthread_create the same way)."""
    sp = LocalSpawner(engine="python")
    sp.spawn(1, ["sleep", "0.2"])

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    sp.spawn(2, ["true"])
    monkeypatch.undo()
    got = collect(sp, 2)
    assert got[1]["ev"] == "exit" and got[1]["rc"] == 0
    assert got[2]["ev"] == "error" and "can't start new thread" in got[2]["msg"]
    assert sp.running == 0
    sp.close()
