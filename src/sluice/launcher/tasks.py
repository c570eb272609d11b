"""One task's start and end, from its own thread: the fast fork_exec path, environments encoded once, and the
per-task threads (`Worker`) that start a task, wait for it and report its end. `LocalSpawner` (spawn.py) is the
façade that hands orders to these threads and turns their reports into events.

Why a thread per running task: the thread that starts a task waits for it (a blocking ``waitid``, which lets go
of the GIL), wakes on the core the task just left, and starts the next task there. A signal reaches a task
only while it is unreaped (its pid cannot have been recycled): each task's thread marks it ended under a lock
before it reaps.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

__all__ = ["Engine", "Event", "LayeredEnv", "Order", "Task", "ThreadEngine", "env_list", "executables", "killpg",
           "make_dir"]

Event = dict[str, Any]
_OUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_WAIT_FLAGS = os.WEXITED | os.WNOWAIT

_fork_exec: Any
try:  # the fast path skips Popen's per-call Python overhead (~40% of a /bin/true task)
    from _posixsubprocess import fork_exec as _fork_exec
except ImportError:  # pragma: no cover
    _fork_exec = None
_FAST = _fork_exec is not None and sys.version_info[:2] == (3, 11)  # its signature is version-specific
_env_cache: dict[tuple[str, str], bytes] = {}
_exe_cache: dict[tuple[str, str], tuple[bytes, ...]] = {}


class LayeredEnv(Mapping[str, str]):
    """A task's environment: a shared base (the launcher's) plus the task's own few variables.

    A read-only view to every reader (setting a key sets the task's own); nothing is copied per task, and the
    local spawner encodes the base once per set of overridden keys, which matters at thousands of tasks a
    second with a 150-variable environment.
    """

    __slots__ = ("base", "extra")

    def __init__(self, base: dict[str, str], extra: dict[str, str]) -> None:
        self.base = base
        self.extra = extra

    def __getitem__(self, key: str) -> str:
        extra = self.extra
        return extra[key] if key in extra else self.base[key]

    def __contains__(self, key: object) -> bool:
        return key in self.extra or key in self.base

    def __iter__(self) -> Iterator[str]:
        yield from self.extra
        yield from (k for k in self.base if k not in self.extra)

    def __len__(self) -> int:
        return len(self.extra) + sum(1 for k in self.base if k not in self.extra)

    def __setitem__(self, key: str, value: str) -> None:
        self.extra[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        extra = self.extra
        return extra[key] if key in extra else self.base.get(key, default)


# (id of a base env, the keys a task overrides) -> (that base, its other pairs encoded)
_base_cache: dict[tuple[int, frozenset[str]], tuple[dict[str, str], list[bytes]]] = {}


def env_list(env: Mapping[str, str]) -> list[bytes]:
    """Encode an environment, remembering each pair: tasks' environments are mostly identical."""
    if isinstance(env, LayeredEnv):
        extra = env.extra
        key = (id(env.base), frozenset(extra))
        hit = _base_cache.get(key)
        if hit is None or hit[0] is not env.base:
            if len(_base_cache) > 1000:
                _base_cache.clear()
            hit = _base_cache[key] = (env.base, env_list({k: v for k, v in env.base.items() if k not in extra}))
        return hit[1] + env_list(extra)
    cache = _env_cache
    if len(cache) > 20_000:
        cache.clear()
    out = []
    for kv in env.items():
        b = cache.get(kv)
        if b is None:
            k, v = kv
            if "=" in k or "\0" in k or "\0" in v:
                raise ValueError(f"illegal environment variable {k!r}")
            b = cache[kv] = os.fsencode(k) + b"=" + os.fsencode(v)
        out.append(b)
    return out


def executables(name: str, env: Mapping[str, str]) -> tuple[bytes, ...]:
    """Candidate paths the child tries in turn (as os.execvpe does), cached per PATH."""
    path = env.get("PATH", os.defpath)
    key = (name, path)
    found = _exe_cache.get(key)
    if found is None:
        exe = os.fsencode(name)
        found = (exe,) if b"/" in exe else tuple(
            os.path.join(os.fsencode(d), exe) for d in os.get_exec_path({"PATH": path}))
        _exe_cache[key] = found
    return found


def _spawn_fast(args: list[str], cwd: str | None, env: Mapping[str, str], fds: tuple[int, int, int]) -> tuple[int, int]:
    """fork_exec exactly as subprocess.Popen does on 3.11, in a new session; returns (pid, error pipe).

    Popen reads the error pipe at once, waiting for the child to get through exec; that wait was 5% of a
    task's spawn. Here the caller keeps the pipe and reads it when the child exits (`_exec_error`): a child
    whose exec failed exits at once, having written why."""
    if not args or "\0" in "".join(args):
        raise ValueError("empty argv or embedded null byte")
    assert _fork_exec is not None
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _fork_exec(args, executables(args[0], env), True, (w,), cwd, env_list(env),
                         fds[0], -1, -1, fds[1], -1, fds[2], r, w, True, True, -1, None, None, None,
                         -1, None, True)
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
    return pid, r


def _exec_error(errpipe: int) -> Exception | None:
    """What the child wrote to its error pipe before dying ("ExceptionName:hex_errno:message"), if anything."""
    try:
        data = os.read(errpipe, 50_000)
    finally:
        os.close(errpipe)
    if not data:
        return None
    name, _, rest = data.partition(b":")
    hexerr, _, msg = rest.partition(b":")
    errno = int(hexerr or b"0", 16)
    text = "" if msg == b"noexec" else msg.decode(errors="replace")
    if errno:
        return OSError(errno, os.strerror(errno) + (f": {text}" if text else ""))
    return subprocess.SubprocessError(f"{name.decode(errors='replace')}: {text}")


class Task:
    """One task, shared by the loop thread (kills, timers) and the engine that starts and reaps it."""

    __slots__ = ("id", "pid", "timed_out", "signalled", "ended", "early_sig", "handle", "argv0", "paths")

    def __init__(self, id: int) -> None:
        self.id = id
        self.pid = 0  # set by its thread once started
        self.timed_out = False
        self.signalled = False
        self.ended = False  # exited and about to be reaped: its pid may be reused, never signal it again
        self.early_sig = 0  # a signal sent before the task had a pid; its thread delivers it on start
        self.handle = -1  # the compiled engine's slot
        self.argv0 = ""
        self.paths: tuple[str | None, str | None, str | None] = (None, None, None)  # cwd, stdout, stderr


class Order:
    """What a task thread needs to start one task."""

    __slots__ = ("task", "args", "cwd", "env", "stdout", "stderr", "make_cwd")

    def __init__(self, task: Task, args: list[str], cwd: str | None, env: Mapping[str, str],
                 stdout: str | None, stderr: str | None, make_cwd: bool) -> None:
        self.task, self.args, self.cwd, self.env = task, args, cwd, env
        self.stdout, self.stderr, self.make_cwd = stdout, stderr, make_cwd


class Engine(Protocol):
    """What `LocalSpawner` needs from whatever starts and reaps its tasks: this module's threads
    (`ThreadEngine`) or the compiled engine (cengine.py). Each end (or failure to start) is reported once, as a
    (task, event) pair from `drain`, after the eventfd the engine was given has been written."""

    @property
    def threads(self) -> int: ...

    def start(self, task: Task, args: list[str], cwd: str | None, env: Mapping[str, str], stdout: str | None,
              stderr: str | None, make_cwd: bool, standby: bool = False) -> None:
        """standby: start it on the thread of the next task to end, at once; that end's event says so
        ("next": this task's id), and the end's resources pass to it."""

    def cancel(self, task: Task) -> bool:
        """Take back a standby task that has not started (True); False: it has, or it is no standby."""

    def signal(self, task: Task, sig: int) -> None: ...

    def drain(self) -> list[tuple[Task, Event]]: ...

    def close(self) -> None: ...


def open_out(path: str | None, devnull: int) -> int:
    return devnull if path is None else os.open(path, _OUT_FLAGS, 0o644)


def killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def make_dir(cwd: str) -> None:
    """mkdir -p in one syscall when the parent exists (os.makedirs stats the parent first, every time)."""
    try:
        os.mkdir(cwd)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(cwd, exist_ok=True)


class ThreadEngine:
    """The pure-Python engine: task threads, made on demand (one per task running or starting) and reused.
    Orders come in, (task, event) pairs go out, and the eventfd is written for each. Each thread runs `serve`
    until it takes a None."""

    def __init__(self, efd: int, devnull: int, started_events: bool) -> None:
        self.orders: queue.SimpleQueue[Order | None] = queue.SimpleQueue()
        self.done: deque[tuple[Task, Event]] = deque()
        self.efd = efd
        self.devnull = devnull
        self.lock = threading.Lock()  # between a task's `ended` mark and the signals sent to it
        self.started_events = started_events
        self._threads: list[threading.Thread] = []
        self._busy = 0  # orders handed over whose end `drain` has not yet returned
        self.standby: deque[Order] = deque()  # under `lock`: each goes to the thread of the next end

    @property
    def threads(self) -> int:
        return len(self._threads)

    def start(self, task: Task, args: list[str], cwd: str | None, env: Mapping[str, str], stdout: str | None,
              stderr: str | None, make_cwd: bool, standby: bool = False) -> None:
        if standby:
            with self.lock:
                self.standby.append(Order(task, args, cwd, env, stdout, stderr, make_cwd))
            return
        if self._busy >= len(self._threads):  # every thread is busy with a running task: one more
            t = threading.Thread(target=self.serve, name=f"sluice-spawn-{len(self._threads)}", daemon=True)
            try:
                t.start()
            except RuntimeError as e:  # out of threads (ulimit -u, memory): this task's error, not the loop's
                self._busy += 1
                self.done.append((task, {"ev": "error", "id": task.id, "msg": f"cannot spawn {args[:1]!r}: {e}"}))
                os.eventfd_write(self.efd, 1)
                return
            self._threads.append(t)
        self._busy += 1
        self.orders.put(Order(task, args, cwd, env, stdout, stderr, make_cwd))

    def cancel(self, task: Task) -> bool:
        with self.lock:
            for o in self.standby:
                if o.task is task:
                    self.standby.remove(o)
                    return True
        return False

    def signal(self, task: Task, sig: int) -> None:
        task.signalled = True
        with self.lock:
            if task.ended:
                return
            if not task.pid:
                task.early_sig = sig if task.early_sig != signal.SIGKILL else task.early_sig
                return
            pid = task.pid
        killpg(pid, sig)

    def drain(self) -> list[tuple[Task, Event]]:
        done, out = self.done, []
        while done:
            item = done.popleft()
            if item[1]["ev"] != "started" and "next" not in item[1]:  # a successor keeps the thread busy
                self._busy -= 1
            out.append(item)
        return out

    def close(self) -> None:
        for _ in self._threads:
            self.orders.put(None)
        for t in self._threads:
            t.join(5.0)
        self._threads.clear()

    def serve(self) -> None:
        orders, done, efd, lock, standby = self.orders, self.done, self.efd, self.lock, self.standby
        order: Order | None
        while (order := orders.get()) is not None:
            while order is not None:  # a task, then the standby orders its ends hand over
                try:
                    ev = self.run(order)
                except BaseException as e:  # never lose a task: whatever went wrong is its error
                    ev = {"ev": "error", "id": order.task.id, "msg": f"lost track of the task: {e!r}"}
                task, order = order.task, None
                with lock:  # the end and its successor together: the loop never sees one without the other
                    if standby:
                        order = standby.popleft()
                        ev["next"] = order.task.id
                    done.append((task, ev))
                os.eventfd_write(efd, 1)

    def run(self, o: Order) -> Event:
        task, args = o.task, o.args
        devnull = self.devnull
        out = err = devnull
        proc = None
        errpipe = -1
        try:
            if o.make_cwd:
                assert o.cwd is not None
                make_dir(o.cwd)
            out = open_out(o.stdout, devnull)
            err = out if o.stderr == o.stdout else open_out(o.stderr, devnull)
            if _FAST:
                pid, errpipe = _spawn_fast(args, o.cwd, o.env, (devnull, out, err))
            else:
                proc = subprocess.Popen(args, cwd=o.cwd, env=o.env, stdin=devnull, stdout=out, stderr=err,
                                        close_fds=False, start_new_session=True)
                pid = proc.pid
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            ev: Event = {"ev": "error", "id": task.id, "msg": f"cannot spawn {args[:1]!r}: {exc}"}
            if isinstance(exc, OSError) and exc.errno:  # the launcher tells a full disk from the job's fault
                ev["errno"] = exc.errno
            return ev
        finally:
            if out != devnull:
                os.close(out)
            if err not in (out, devnull):
                os.close(err)
        with self.lock:
            task.pid = pid
            early = task.early_sig
        if early:  # killed (or timed out) while it was being started
            killpg(pid, early)
        if self.started_events:
            self.done.append((task, {"ev": "started", "id": task.id, "pid": pid, "t": time.time()}))
            os.eventfd_write(self.efd, 1)
        os.waitid(os.P_PID, pid, _WAIT_FLAGS)  # blocks without reaping: the pid stays ours until waitpid
        with self.lock:
            task.ended = True
        if task.signalled:  # leftovers of a killed task go too
            killpg(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        if proc is not None:
            proc.returncode = rc  # so subprocess never waits for it again
        if errpipe >= 0:
            if rc != 255:  # a child whose exec failed says why and exits 255; others wrote nothing here
                os.close(errpipe)
            elif (why := _exec_error(errpipe)) is not None:
                return {"ev": "error", "id": task.id, "msg": f"cannot spawn {[args[0]]!r}: {why}"}
        return {"ev": "exit", "id": task.id, "rc": rc, "pid": pid, "t": time.time(), "timed_out": task.timed_out}

