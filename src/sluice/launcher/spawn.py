"""Starting tasks on this node and hearing when they end: the engine of the launcher's own node and of each
node agent (agent.py wraps it in a pipe protocol for the other nodes).

Why a thread per running task: the thread that starts a task waits for it (a blocking ``waitid``, which lets go
of the GIL), wakes on the core the task just left, and starts the next task there. A single loop that both
spawned and reaped sat in ``fork_exec``'s vfork wait for 0.35-0.45 ms a task (the new child queued behind a
running one on the other core); from a task's own thread the median wait is ~0.1 ms. The launcher's loop
only hands work over and reads exits, never waits on a child, and ran 10,000 /bin/true jobs at 0.96 of the
spawn ceiling instead of 0.86 in interleaved pairs (bench/README.md).

Threads are made on demand, one per task running or starting, and reused: a node never holds more than it
ever ran at once. A signal reaches a task only while it is unreaped (its pid cannot have been recycled):
each task's thread marks it ended under a lock before it reaps.
"""
from __future__ import annotations

import heapq
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

__all__ = ["Event", "LayeredEnv", "LocalSpawner", "Spawner", "make_dir"]

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


def _env_list(env: Mapping[str, str]) -> list[bytes]:
    """Encode an environment, remembering each pair: tasks' environments are mostly identical."""
    if isinstance(env, LayeredEnv):
        extra = env.extra
        key = (id(env.base), frozenset(extra))
        hit = _base_cache.get(key)
        if hit is None or hit[0] is not env.base:
            if len(_base_cache) > 1000:
                _base_cache.clear()
            hit = _base_cache[key] = (env.base, _env_list({k: v for k, v in env.base.items() if k not in extra}))
        return hit[1] + _env_list(extra)
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


def _executables(name: str, env: Mapping[str, str]) -> tuple[bytes, ...]:
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
        pid = _fork_exec(args, _executables(args[0], env), False, (w,), cwd, _env_list(env),
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


class Spawner(Protocol):
    """What the launcher's runner needs from a spawner, local or remote."""

    def start(self, argv_prefix: Sequence[str] = ()) -> None: ...

    def spawn(self, id: int, argv: Sequence[str], *, cwd: str | None = None,
              env: Mapping[str, str] | None = None, stdout: str | None = None,
              stderr: str | None = None, shell: bool = False, timeout: float | None = None,
              make_cwd: bool = True) -> None: ...

    def kill(self, id: int, sig: int = signal.SIGTERM) -> None: ...

    def poll_events(self) -> list[Event]: ...

    def fileno(self) -> int: ...

    def timeout_hint(self) -> float | None: ...

    def close(self) -> list[Event]: ...


class _Task:
    """One task, shared by the loop thread (kills, timers) and the thread that starts and reaps it."""

    __slots__ = ("id", "pid", "timed_out", "signalled", "ended", "early_sig")

    def __init__(self, id: int) -> None:
        self.id = id
        self.pid = 0  # set by its thread once started
        self.timed_out = False
        self.signalled = False
        self.ended = False  # exited and about to be reaped: its pid may be reused, never signal it again
        self.early_sig = 0  # a signal sent before the task had a pid; its thread delivers it on start


class _Order:
    """What a task thread needs to start one task."""

    __slots__ = ("task", "args", "cwd", "env", "stdout", "stderr", "make_cwd")

    def __init__(self, task: _Task, args: list[str], cwd: str | None, env: Mapping[str, str],
                 stdout: str | None, stderr: str | None, make_cwd: bool) -> None:
        self.task, self.args, self.cwd, self.env = task, args, cwd, env
        self.stdout, self.stderr, self.make_cwd = stdout, stderr, make_cwd


def _open_out(path: str | None, devnull: int) -> int:
    return devnull if path is None else os.open(path, _OUT_FLAGS, 0o644)


def _killpg(pid: int, sig: int) -> None:
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


class LocalSpawner:
    """Spawn tasks from this process, each from a thread that then waits for it: the fastest path.

    The caller registers `fileno` in its selector, waits at most `timeout_hint` seconds, then calls
    `poll_events` (cheap when nothing happened). Spawn errors are reported as events, never raised, so one
    bad job cannot stop the loop. Only the thread that calls `spawn` may call the other methods.
    """

    def __init__(self, *, kill_grace: float = 5.0, started_events: bool = False) -> None:
        self.kill_grace = kill_grace
        self.started_events = started_events
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._by_id: dict[int, _Task] = {}
        self._pending: list[Event] = []  # events made by the caller's thread
        self._done: deque[tuple[_Task, Event]] = deque()  # events made by task threads
        self._timers: list[tuple[float, int, int, int]] = []  # (when, seq, id, signal)
        self._seq = 0
        self._orders: queue.SimpleQueue[_Order | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0  # orders handed over whose end the caller has not yet seen
        self._lock = threading.Lock()  # between a task's `ended` mark and the signals sent to it
        self._closed = False

    def start(self, argv_prefix: Sequence[str] = ()) -> None:
        """Nothing to start: the launcher is its own agent."""

    @property
    def running(self) -> int:
        return len(self._by_id)

    def fileno(self) -> int:
        """Readable when a task has ended or failed to start (an eventfd the task threads write)."""
        return self._efd

    def spawn(self, id: int, argv: Sequence[str], *, cwd: str | None = None,
              env: Mapping[str, str] | None = None, stdout: str | None = None,
              stderr: str | None = None, shell: bool = False, timeout: float | None = None,
              make_cwd: bool = True) -> None:
        """Start one task; its exit (or an error) shows up in `poll_events`. `make_cwd=False`: the caller
        made the directory already (the launcher does so off its hot loop)."""
        args = ["/bin/sh", "-c", " ".join(argv)] if shell else list(argv)
        if self._busy >= len(self._threads):  # every thread is busy with a running task: one more
            t = threading.Thread(target=self._serve, name=f"sluice-spawn-{len(self._threads)}", daemon=True)
            try:
                t.start()
            except RuntimeError as e:  # out of threads (ulimit -u, memory): this task's error, not the loop's
                self._pending.append({"ev": "error", "id": id, "msg": f"cannot spawn {argv[:1]!r}: {e}"})
                return
            self._threads.append(t)
        task = _Task(id)
        self._by_id[id] = task
        self._busy += 1
        self._orders.put(_Order(task, args, cwd or None, os.environ if env is None else env, stdout, stderr,
                                make_cwd and bool(cwd)))
        if timeout is not None:
            self._timer(time.monotonic() + timeout, id, -signal.SIGTERM)

    def report_error(self, id: int, msg: str) -> None:
        """Queue an error event for ``id`` (a job that failed before it could be spawned)."""
        self._pending.append({"ev": "error", "id": id, "msg": msg})

    # ---------------------------------------------------------------- task threads
    def _serve(self) -> None:
        orders, done, efd = self._orders, self._done, self._efd
        while (order := orders.get()) is not None:
            try:
                ev = self._run(order)
            except BaseException as e:  # never lose a task: whatever went wrong is its error
                ev = {"ev": "error", "id": order.task.id, "msg": f"lost track of the task: {e!r}"}
            done.append((order.task, ev))
            os.eventfd_write(efd, 1)

    def _run(self, o: _Order) -> Event:
        task, args = o.task, o.args
        devnull = self._devnull
        out = err = devnull
        proc = None
        errpipe = -1
        try:
            if o.make_cwd:
                assert o.cwd is not None
                make_dir(o.cwd)
            out = _open_out(o.stdout, devnull)
            err = out if o.stderr == o.stdout else _open_out(o.stderr, devnull)
            if _FAST:
                pid, errpipe = _spawn_fast(args, o.cwd, o.env, (devnull, out, err))
            else:
                proc = subprocess.Popen(args, cwd=o.cwd, env=o.env, stdin=devnull, stdout=out, stderr=err,
                                        close_fds=False, start_new_session=True)
                pid = proc.pid
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            return {"ev": "error", "id": task.id, "msg": f"cannot spawn {args[:1]!r}: {exc}"}
        finally:
            if out != devnull:
                os.close(out)
            if err not in (out, devnull):
                os.close(err)
        with self._lock:
            task.pid = pid
            early = task.early_sig
        if early:  # killed (or timed out) while it was being started
            _killpg(pid, early)
        if self.started_events:
            self._done.append((task, {"ev": "started", "id": task.id, "pid": pid, "t": time.time()}))
            os.eventfd_write(self._efd, 1)
        os.waitid(os.P_PID, pid, _WAIT_FLAGS)  # blocks without reaping: the pid stays ours until waitpid
        with self._lock:
            task.ended = True
        if task.signalled:  # leftovers of a killed task go too
            _killpg(pid, signal.SIGKILL)
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

    # ---------------------------------------------------------------- signals and timers
    def _signal(self, task: _Task, sig: int) -> None:
        task.signalled = True
        with self._lock:
            if task.ended:
                return
            if not task.pid:
                task.early_sig = sig if task.early_sig != signal.SIGKILL else task.early_sig
                return
            pid = task.pid
        _killpg(pid, sig)

    def _timer(self, when: float, id: int, sig: int) -> None:
        """sig < 0 marks a timeout (so the exit event says timed_out)."""
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, id, sig))

    def kill(self, id: int, sig: int = signal.SIGTERM) -> None:
        """Signal the task's whole process group; a TERM is followed by KILL after the grace."""
        task = self._by_id.get(id)
        if task is None:
            return
        self._signal(task, sig)
        if sig == signal.SIGTERM:
            self._timer(time.monotonic() + self.kill_grace, id, signal.SIGKILL)

    def timeout_hint(self) -> float | None:
        """Seconds the caller may block before calling `poll_events` again (None: no limit)."""
        if self._pending or self._done:
            return 0.0
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, id, sig = heapq.heappop(self._timers)
            task = self._by_id.get(id)
            if task is None:
                continue
            if sig < 0:  # wall time exceeded
                task.timed_out = True
                self.kill(id, -sig)
            else:
                self._signal(task, sig)

    # ---------------------------------------------------------------- events
    def poll_events(self) -> list[Event]:
        """Events since the last call, without blocking."""
        if self._timers:
            self._fire_timers()
        events, self._pending = self._pending, []
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        done, by_id = self._done, self._by_id
        while done:
            task, ev = done.popleft()
            if ev["ev"] != "started":
                self._busy -= 1
                if by_id.get(task.id) is task:
                    del by_id[task.id]
            events.append(ev)
        return events

    def events(self) -> Iterator[Event]:
        return iter(self.poll_events())

    def _wait(self, timeout: float) -> None:
        select.select([self._efd], [], [], timeout)

    def close(self, grace: float | None = None) -> list[Event]:
        """TERM every task group, KILL what is left after ``grace``; return the final events."""
        if self._closed:
            return self.poll_events()
        grace = self.kill_grace if grace is None else grace
        events = self.poll_events()
        for task in list(self._by_id.values()):
            self._signal(task, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._by_id and (left := deadline - time.monotonic()) > 0:
            self._wait(left)
            events += self.poll_events()
        for task in list(self._by_id.values()):
            self._signal(task, signal.SIGKILL)
        while self._by_id or self._busy:
            self._wait(1.0)
            events += self.poll_events()
        self._timers.clear()
        self._closed = True
        for _ in self._threads:
            self._orders.put(None)
        for t in self._threads:
            t.join(5.0)
        os.close(self._efd)
        os.close(self._devnull)
        return events
