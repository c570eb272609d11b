"""The node agent: one long-lived process per node that spawns tasks and streams their exits back.

Why: starting each tiny task through ``srun``/``mpiexec`` costs 40-150 ms; an agent started once
per node spawns locally in well under a millisecond. On a single machine the launcher uses
`LocalSpawner` in its own process (the same engine, no pipe). Both spawners share one interface
(`Spawner`): ``start``, ``spawn``, ``kill``, ``poll_events``/``events``, ``fileno``,
``timeout_hint``, ``close``.

Protocol (``python -m sluice.launcher.agent``): one JSON object per line.

stdin (launcher -> agent)::

    {"op": "spawn", "id": 123, "argv": ["prog", "arg"], "cwd": "/path", "env": {...full env...},
     "stdout": "/path/out", "stderr": "/path/err", "shell": false, "timeout": 60.0}
    {"op": "kill", "id": 123, "sig": 15}
    {"op": "exit"}

Only ``op``, ``id`` and ``argv`` are required: a missing ``cwd``/``env`` inherits the agent's,
a missing output path means /dev/null, ``stdout == stderr`` shares one file. With ``shell`` the
argv words are joined and run by ``/bin/sh -c``. The agent makes ``cwd`` (mkdir -p) and opens the
output files itself, right before the spawn. Each task leads its own session, so ``kill`` signals
the task's whole process group; a TERM (from ``kill`` or a timeout) is followed by KILL after the
grace period (``--kill-grace``, default 5 s).

stdout (agent -> launcher)::

    {"ev": "exit", "id": 123, "rc": 0, "pid": 4242, "t": 1764070000.1, "timed_out": false}
    {"ev": "error", "id": 123, "msg": "cannot spawn 'prog': [Errno 2] No such file or directory"}
    {"ev": "started", "id": 123, "pid": 4242, "t": 1764070000.0}    (only with --started)

``rc`` is negative for a signal (-9 = SIGKILL). "started" is off by default: the exit event
carries the pid, and half the lines means half the parsing in the launcher's hot loop.

Reaping is event driven: every child gets a pidfd registered in one epoll object, whose own fd is
what `LocalSpawner.fileno` hands to the launcher's selector. No polling sleeps. When stdin closes
(the launcher died, even by kill -9) or on ``exit``/SIGTERM, the agent TERMs every task group,
KILLs what is left after the grace period, and exits: nothing outlives the launcher.
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import select
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from sluice.launcher.latency import prompt_wakeups

__all__ = ["AgentClient", "Event", "LayeredEnv", "LocalSpawner", "Spawner", "main"]

Event = dict[str, Any]
_OUT_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC

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
    __slots__ = ("id", "pid", "proc", "pidfd", "timed_out", "signalled", "errpipe", "argv0")

    def __init__(self, id: int, pid: int, proc: subprocess.Popen[bytes] | None, pidfd: int, errpipe: int = -1,
                 argv0: str = "") -> None:
        self.id, self.pid, self.proc, self.pidfd = id, pid, proc, pidfd
        self.timed_out = False
        self.signalled = False
        self.errpipe, self.argv0 = errpipe, argv0


def _open_out(path: str | None, devnull: int) -> int:
    return devnull if path is None else os.open(path, _OUT_FLAGS, 0o644)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class LocalSpawner:
    """Spawn tasks in this process and reap them through pidfds: the fastest path.

    The launcher registers `fileno` in its selector, waits at most `timeout_hint` seconds, then
    calls `poll_events` (cheap when nothing happened). Spawn errors are reported as events, never
    raised, so one bad job cannot stop the loop.
    """

    def __init__(self, *, kill_grace: float = 5.0, started_events: bool = False) -> None:
        self.kill_grace = kill_grace
        self.started_events = started_events
        self._ep = select.epoll()
        self._devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self._by_fd: dict[int, _Task] = {}
        self._by_id: dict[int, _Task] = {}
        self._pending: list[Event] = []
        self._timers: list[tuple[float, int, int, int]] = []  # (when, seq, id, signal)
        self._seq = 0

    def start(self, argv_prefix: Sequence[str] = ()) -> None:
        """Nothing to start: the launcher is its own agent."""

    @property
    def running(self) -> int:
        return len(self._by_id)

    def fileno(self) -> int:
        """Readable when a task has exited (the epoll fd over all pidfds)."""
        return self._ep.fileno()

    def spawn(self, id: int, argv: Sequence[str], *, cwd: str | None = None,
              env: Mapping[str, str] | None = None, stdout: str | None = None,
              stderr: str | None = None, shell: bool = False, timeout: float | None = None,
              make_cwd: bool = True) -> None:
        """Start one task; its exit (or an error) shows up in `poll_events`. `make_cwd=False`: the caller
        made the directory already (the launcher does so off its hot loop)."""
        args = ["/bin/sh", "-c", " ".join(argv)] if shell else list(argv)
        out = err = self._devnull
        try:
            if cwd and make_cwd:
                try:
                    os.mkdir(cwd)
                except FileExistsError:
                    pass
                except FileNotFoundError:
                    os.makedirs(cwd, exist_ok=True)
            out = _open_out(stdout, self._devnull)
            err = out if stderr == stdout else _open_out(stderr, self._devnull)
            proc = None
            errpipe = -1
            if _FAST:
                pid, errpipe = _spawn_fast(args, cwd or None, os.environ if env is None else env,
                                           (self._devnull, out, err))
            else:
                proc = subprocess.Popen(args, cwd=cwd or None, env=env, stdin=self._devnull, stdout=out,
                                        stderr=err, close_fds=False, start_new_session=True)
                pid = proc.pid
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            self._pending.append({"ev": "error", "id": id, "msg": f"cannot spawn {args[:1]!r}: {exc}"})
            return
        finally:
            if out != self._devnull:
                os.close(out)
            if err not in (out, self._devnull):
                os.close(err)
        pidfd = os.pidfd_open(pid)
        task = _Task(id, pid, proc, pidfd, errpipe, args[0])
        self._ep.register(pidfd, select.EPOLLIN)
        self._by_fd[pidfd] = task
        self._by_id[id] = task
        if self.started_events:
            self._pending.append({"ev": "started", "id": id, "pid": pid, "t": time.time()})
        if timeout is not None:
            self._timer(time.monotonic() + timeout, id, -signal.SIGTERM)

    def report_error(self, id: int, msg: str) -> None:
        """Queue an error event for ``id`` (a job that failed before it could be spawned)."""
        self._pending.append({"ev": "error", "id": id, "msg": msg})

    def _timer(self, when: float, id: int, sig: int) -> None:
        """sig < 0 marks a timeout (so the exit event says timed_out)."""
        self._seq += 1
        heapq.heappush(self._timers, (when, self._seq, id, sig))

    def kill(self, id: int, sig: int = signal.SIGTERM) -> None:
        """Signal the task's whole process group; a TERM is followed by KILL after the grace."""
        task = self._by_id.get(id)
        if task is None:
            return
        task.signalled = True
        _killpg(task.pid, sig)
        if sig == signal.SIGTERM:
            self._timer(time.monotonic() + self.kill_grace, id, signal.SIGKILL)

    def timeout_hint(self) -> float | None:
        """Seconds the launcher may block before calling `poll_events` again (None: no limit)."""
        if self._pending:
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
                task.signalled = True
                _killpg(task.pid, sig)

    def _reap(self, task: _Task) -> Event:
        self._ep.unregister(task.pidfd)
        os.close(task.pidfd)
        del self._by_fd[task.pidfd]
        del self._by_id[task.id]
        _, status = os.waitpid(task.pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        if task.proc is not None:
            task.proc.returncode = rc  # so subprocess never waits for it again
        if task.signalled:  # leftovers of a killed task go too
            _killpg(task.pid, signal.SIGKILL)
        if task.errpipe >= 0:
            if rc != 255:  # a child whose exec failed says why and exits 255; others wrote nothing here
                os.close(task.errpipe)
            elif (exc := _exec_error(task.errpipe)) is not None:
                return {"ev": "error", "id": task.id, "msg": f"cannot spawn {[task.argv0]!r}: {exc}"}
        return {"ev": "exit", "id": task.id, "rc": rc, "pid": task.pid, "t": time.time(),
                "timed_out": task.timed_out}

    def poll_events(self) -> list[Event]:
        """Events since the last call, without blocking."""
        if self._timers:
            self._fire_timers()
        events, self._pending = self._pending, []
        for fd, _ in self._ep.poll(0):
            task = self._by_fd.get(fd)
            if task is not None:
                events.append(self._reap(task))
        return events

    def events(self) -> Iterator[Event]:
        return iter(self.poll_events())

    def close(self, grace: float | None = None) -> list[Event]:
        """TERM every task group, KILL what is left after ``grace``; return the final events."""
        grace = self.kill_grace if grace is None else grace
        events = self.poll_events()
        for task in self._by_id.values():
            task.signalled = True
            _killpg(task.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._by_id and (left := deadline - time.monotonic()) > 0:
            self._ep.poll(left)
            events += self.poll_events()
        for task in list(self._by_id.values()):
            _killpg(task.pid, signal.SIGKILL)
        while self._by_id:
            self._ep.poll(1.0)
            events += self.poll_events()
        self._timers.clear()
        if not self._ep.closed:
            self._ep.close()
            os.close(self._devnull)
        return events


def _dumps(ev: Event) -> bytes:
    return (json.dumps(ev, separators=(",", ":")) + "\n").encode()


class AgentClient:
    """Drive an agent process over its stdin/stdout: same interface as `LocalSpawner`.

    ``start(["srun", "-N1", "-n1", "-w", "n3", "--overlap"])`` runs the agent on n3 (see
    `sluice.launcher.mpi.MPILauncher.agent_argv`); ``start()`` runs it here.
    """

    def __init__(self, *, python: str = sys.executable, agent_args: Sequence[str] = ()) -> None:
        self.python = python
        self.agent_args = list(agent_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self._pending: list[Event] = []
        self._eof = False

    def start(self, argv_prefix: Sequence[str] = ()) -> None:
        cmd = [*argv_prefix, self.python, "-m", "sluice.launcher.agent", *self.agent_args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)

    def _send(self, msg: Event) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError("agent not started")
        data = memoryview(_dumps(msg))
        fd = self.proc.stdin.fileno()
        while data:
            data = data[os.write(fd, data):]

    def spawn(self, id: int, argv: Sequence[str], *, cwd: str | None = None,
              env: Mapping[str, str] | None = None, stdout: str | None = None,
              stderr: str | None = None, shell: bool = False, timeout: float | None = None,
              make_cwd: bool = True) -> None:
        """The agent always makes `cwd` itself: its node may not see the launcher's file system."""
        msg: Event = {"op": "spawn", "id": id, "argv": list(argv), "cwd": cwd, "stdout": stdout,
                      "stderr": stderr, "shell": shell, "timeout": timeout}
        if env is not None:
            msg["env"] = dict(env)
        self._send(msg)

    def kill(self, id: int, sig: int = signal.SIGTERM) -> None:
        self._send({"op": "kill", "id": id, "sig": int(sig)})

    def fileno(self) -> int:
        """Readable when the agent has sent events (or died)."""
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def timeout_hint(self) -> float | None:
        return 0.0 if self._pending else None

    @property
    def alive(self) -> bool:
        return not self._eof

    def poll_events(self) -> list[Event]:
        """Events the agent has sent so far, without blocking."""
        events, self._pending = self._pending, []
        while not self._eof:
            try:
                chunk = os.read(self.fileno(), 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                self._eof = True
                break
            self._buf += chunk
        if b"\n" in self._buf:
            *lines, self._buf = self._buf.split(b"\n")
            events += [json.loads(ln) for ln in lines if ln]
        return events

    def events(self) -> Iterator[Event]:
        return iter(self.poll_events())

    def close(self, timeout: float = 30.0) -> list[Event]:
        """Ask the agent to stop its tasks and exit; return the events it sent meanwhile."""
        events: list[Event] = []
        if self.proc is None:
            return events
        try:
            self._send({"op": "exit"})
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        deadline = time.monotonic() + timeout
        while not self._eof and (left := deadline - time.monotonic()) > 0:
            select.select([self.fileno()], [], [], left)
            events += self.poll_events()
        try:
            self.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return events


# --- the agent process ------------------------------------------------------------------------

class _Agent:
    def __init__(self, spawner: LocalSpawner, fd_in: int = 0, fd_out: int = 1) -> None:
        self.sp, self.fd_in, self.fd_out = spawner, fd_in, fd_out
        self.out = bytearray()
        self.inbuf = b""
        self.sel = selectors.DefaultSelector()
        os.set_blocking(fd_out, False)
        self.sel.register(fd_in, selectors.EVENT_READ, "in")
        self.sel.register(spawner.fileno(), selectors.EVENT_READ, "tasks")
        self.writing = False

    def _emit(self, events: list[Event]) -> None:
        for ev in events:
            self.out += _dumps(ev)
        self._flush()

    def _flush(self) -> None:
        try:
            while self.out:
                del self.out[: os.write(self.fd_out, self.out)]
        except BlockingIOError:
            pass
        want = bool(self.out)
        if want != self.writing:
            self.writing = want
            self.sel.modify(self.fd_in, selectors.EVENT_READ, "in")
            if want:
                self.sel.register(self.fd_out, selectors.EVENT_WRITE, "out")
            else:
                self.sel.unregister(self.fd_out)

    def _handle(self, msg: Event) -> bool:
        op = msg.get("op")
        if op == "spawn":
            self.sp.spawn(msg["id"], msg["argv"], cwd=msg.get("cwd"), env=msg.get("env"),
                          stdout=msg.get("stdout"), stderr=msg.get("stderr"),
                          shell=bool(msg.get("shell")), timeout=msg.get("timeout"))
        elif op == "kill":
            self.sp.kill(msg["id"], int(msg.get("sig", signal.SIGTERM)))
        elif op == "exit":
            return False
        else:
            self.out += _dumps({"ev": "error", "id": msg.get("id"), "msg": f"unknown op {op!r}"})
        return True

    def run(self) -> None:
        """Serve until ``exit`` or end of input; the caller cleans up the tasks."""
        while True:
            for key, _ in self.sel.select(self.sp.timeout_hint()):
                if key.data == "out":
                    self._flush()
                elif key.data == "in":
                    data = os.read(self.fd_in, 1 << 20)
                    if not data:
                        return
                    *lines, self.inbuf = (self.inbuf + data).split(b"\n")
                    for ln in lines:
                        if ln.strip():
                            try:
                                if not self._handle(json.loads(ln)):
                                    return
                            except (ValueError, KeyError, TypeError) as exc:
                                self.out += _dumps({"ev": "error", "id": None, "msg": f"bad message: {exc}"})
            self._emit(self.sp.poll_events())

    def finish(self, grace: float) -> None:
        """Stop every task and send the last events (best effort: the reader may be gone)."""
        events = self.sp.close(grace)
        try:
            os.set_blocking(self.fd_out, True)
            self._emit(events)
        except OSError:
            pass


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sluice.launcher.agent", description=__doc__.splitlines()[0])
    ap.add_argument("--kill-grace", type=float, default=5.0, help="seconds between TERM and KILL")
    ap.add_argument("--started", action="store_true", help="also report each start")
    a = ap.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _raise_exit)
    agent = _Agent(LocalSpawner(kill_grace=a.kill_grace, started_events=a.started))
    try:
        with prompt_wakeups():  # start the next task as soon as one ends (latency.py)
            agent.run()
    except BrokenPipeError:  # the launcher is gone
        pass
    finally:
        agent.finish(a.kill_grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
