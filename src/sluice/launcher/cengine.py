"""The compiled spawn engine (_spawnc.c) behind the `Engine` interface of tasks.py, and the choice of engine.

Why a compiled engine: with /bin/true-sized tasks the launcher is CPU-bound, and the pure-Python task threads
spent more of its CPU taking the GIL back after each of a task's syscalls than the control plane spent on the
job. The C threads do the same work (tasks.ThreadEngine is the reference) without ever taking the GIL.

`make_engine` picks the compiled engine where pip built it (it is optional: no compiler, no engine) unless
SLUICE_SPAWN_ENGINE=python asks for the Python one.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sluice import environ
from sluice.launcher.tasks import Engine, Event, Task, ThreadEngine, env_list, executables

try:
    from sluice.launcher import _spawnc  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - built where a C compiler exists
    _spawnc = None

AVAILABLE = _spawnc is not None
ENGINES = ("c", "python")
_EXIT, _ERROR, _STARTED = 0, 1, 2
_MKDIR, _STDOUT, _STDERR, _EXEC, _THREAD = 1, 2, 3, 4, 5


def make_engine(efd: int, devnull: int, started_events: bool, name: str | None = None) -> Engine:
    """The engine `name` (default: SLUICE_SPAWN_ENGINE, else the compiled one where it exists)."""
    name = name or os.environ.get(environ.SPAWN_ENGINE) or ("c" if AVAILABLE else "python")
    if name not in ENGINES:
        raise ValueError(f"{environ.SPAWN_ENGINE}={name!r}: use one of {', '.join(ENGINES)}")
    if name == "c" and not AVAILABLE:
        raise RuntimeError("the compiled spawn engine was not built (no C compiler when sluice was installed): "
                           f"reinstall with gcc present, or set {environ.SPAWN_ENGINE}=python")
    return CEngine(efd, devnull, started_events) if name == "c" else ThreadEngine(efd, devnull, started_events)


class CEngine:
    """Orders go to C task threads as plain bytes; ends come back as tuples, made into the usual events here."""

    def __init__(self, efd: int, devnull: int, started_events: bool) -> None:
        assert _spawnc is not None
        self._e: Any = _spawnc.Engine(efd, devnull, started_events)
        self._efd = efd
        self._tasks: dict[int, Task] = {}  # by handle (the C slot), until its end is drained
        self._failed: list[tuple[Task, Event]] = []  # orders refused before reaching C

    @property
    def threads(self) -> int:
        return int(self._e.threads)

    def start(self, task: Task, args: list[str], cwd: str | None, env: Mapping[str, str], stdout: str | None,
              stderr: str | None, make_cwd: bool, standby: bool = False) -> None:
        task.argv0, task.paths = args[0] if args else "", (cwd, stdout, stderr)
        try:
            task.handle = self._e.spawn(task.id, executables(args[0], env), args, cwd, env_list(env), stdout,
                                        stdout if stderr == stdout else stderr, make_cwd, standby)
        except (ValueError, TypeError, IndexError, OSError) as exc:
            self._failed.append((task, {"ev": "error", "id": task.id, "msg": f"cannot spawn {args[:1]!r}: {exc}"}))
            os.eventfd_write(self._efd, 1)
            return
        self._tasks[task.handle] = task

    def cancel(self, task: Task) -> bool:
        if task.handle < 0 or not self._e.cancel(task.handle, task.id):
            return False
        del self._tasks[task.handle]
        return True

    def signal(self, task: Task, sig: int) -> None:
        task.signalled = True
        if task.handle >= 0:
            self._e.signal(task.handle, task.id, sig)

    def drain(self) -> list[tuple[Task, Event]]:
        out, self._failed = self._failed, []
        tasks = self._tasks
        for handle, id, kind, code, pid, t, next_handle, next_id in self._e.poll():
            if kind == _STARTED:
                out.append((tasks[handle], {"ev": "started", "id": id, "pid": pid, "t": t}))
                continue
            task = tasks.pop(handle)
            ev = {"ev": "exit", "id": id, "rc": code, "pid": pid, "t": t, "timed_out": task.timed_out} \
                if kind == _EXIT else _error(task, code, pid)
            if next_handle >= 0:
                ev["next"] = next_id
            out.append((task, ev))
        return out

    def close(self) -> None:
        self._e.close()


def _error(task: Task, code: int, stage: int) -> Event:
    """The error event of a task that could not start, worded as the Python engine words it."""
    what = repr([task.argv0])
    if stage == _THREAD:
        return {"ev": "error", "id": task.id, "msg": f"cannot spawn {what}: can't start new thread "
                f"({os.strerror(code)})"}
    cwd, stdout, stderr = task.paths
    path = {_MKDIR: cwd, _STDOUT: stdout, _STDERR: stderr}.get(stage)
    exc = OSError(code, os.strerror(code), path) if path else OSError(code, os.strerror(code))
    return {"ev": "error", "id": task.id, "msg": f"cannot spawn {what}: {exc}", "errno": code}
