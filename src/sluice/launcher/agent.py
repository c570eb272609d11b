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
    {"op": "env", "env": {...}}          (a base environment for the spawns that follow with "extra")
    {"op": "spawn", "id": 124, "argv": [...], "extra": {"SLUICE_JOB_ID": "124"}}   (the base plus these)
    {"op": "spawn", "id": 125, ..., "standby": true}   (start it when the next task ends, in its place)
    {"op": "cancel", "id": 125}          (take a standby back; answered by a "cancelled" event)
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
    {"ev": "error", "id": 123, "msg": "cannot spawn 'prog': [Errno 2] No such file or directory", "errno": 2}
    {"ev": "started", "id": 123, "pid": 4242, "t": 1764070000.0}    (only with --started)
    {"ev": "exit", "id": 123, ..., "next": 125}       (standby 125 started in 123's place as it ended)
    {"ev": "cancelled", "id": 125, "ok": true}        (false: it had started, or was no standby)

``rc`` is negative for a signal (-9 = SIGKILL). "started" is off by default: the exit event
carries the pid, and half the lines means half the parsing in the launcher's hot loop. Events that are ready
together go out as one line, a JSON array of them (one decode per batch: a 1,024-node allocation sends its
launcher thousands of exits a second). The launcher sends its environment once per agent (``env``) and each
spawn only the job's own variables: a 150-variable environment encoded per task cost more than the spawn.

Spawning and reaping are `LocalSpawner`'s (spawn.py): a thread per running task waits for it and
signals an eventfd, which the agent's selector watches. No polling sleeps. When stdin closes
(the launcher died, even by kill -9) or on ``exit``/SIGTERM, the agent TERMs every task group,
KILLs what is left after the grace period, and exits: nothing outlives the launcher.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]

from sluice.launcher.latency import prompt_wakeups
from sluice.launcher.spawn import Event, LayeredEnv, LocalSpawner, Spawner

__all__ = ["AgentClient", "Event", "LayeredEnv", "LocalSpawner", "Spawner", "main"]


log = logging.getLogger("sluice.launcher")
_ENC = json.JSONEncoder(separators=(",", ":"))
_q = encode_basestring_ascii  # a JSON string literal (C)


def _dumps(ev: Event | list[Event]) -> bytes:
    return (_ENC.encode(ev) + "\n").encode()


def _qn(s: str | None) -> str:
    return "null" if s is None else _q(s)


def _str_map(env: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{_q(k)}:{_q(v)}" for k, v in env.items()) + "}"


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
        self._out = bytearray()
        self._base: dict[str, str] | None = None  # the base environment the agent holds
        self.hold = False
        """Keep spawn messages until `flush()` (the launcher sends each agent one write per loop turn)."""
        self.held: set[int] = set()  # tasks spawned whose end has not been read (standbys included)
        self.lost: str | None = None  # the agent went away without being asked to (see _lose)
        self._closing = False

    def start(self, argv_prefix: Sequence[str] = ()) -> None:
        cmd = [*argv_prefix, self.python, "-m", "sluice.launcher.agent", *self.agent_args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)

    def _send(self, msg: Event, *, now: bool = True) -> None:
        self._out += _dumps(msg)
        if now or not self.hold:
            self.flush()

    def flush(self) -> None:
        """Write the messages held back (one write for all of them)."""
        if self._out:
            data, self._out = self._out, bytearray()
            self._write(data)

    def _write(self, data: bytes | bytearray) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError("agent not started")
        view = memoryview(data)
        fd = self.proc.stdin.fileno()
        try:
            while view:
                view = view[os.write(fd, view):]
        except (BrokenPipeError, ConnectionResetError):  # it is gone: its end of file says so (_lose)
            pass

    def spawn(self, id: int, argv: Sequence[str], *, cwd: str | None = None,
              env: Mapping[str, str] | None = None, stdout: str | None = None,
              stderr: str | None = None, shell: bool = False, timeout: float | None = None,
              make_cwd: bool = True, standby: bool = False) -> None:
        """The agent always makes `cwd` itself: its node may not see the launcher's file system. `standby`:
        the agent starts it when its next task ends, in that task's place (LocalSpawner.spawn); `recall`
        asks for it back."""
        if self.lost is not None:  # nobody there to run it
            self._pending.append(self._lost_event(int(id)))
            return
        self.held.add(int(id))
        if isinstance(env, LayeredEnv):  # the shared base once, then each task's own variables
            if env.base is not self._base:
                self._send({"op": "env", "env": env.base}, now=False)
                self._base = env.base
            tail = f',"extra":{_str_map(env.extra)}}}\n'
        else:
            tail = "}\n" if env is None else f',"env":{_str_map(env)}}}\n'
        if standby:
            tail = ',"standby":true' + tail
        # by hand: json.dumps of this message cost 5-10 us, a tenth of what a launcher may spend on a job
        self._out += (f'{{"op":"spawn","id":{int(id)},"argv":[{",".join(map(_q, argv))}],"cwd":{_qn(cwd)},'
                      f'"stdout":{_qn(stdout)},"stderr":{_qn(stderr)},"shell":{"true" if shell else "false"},'
                      f'"timeout":{"null" if timeout is None else repr(float(timeout))}{tail}').encode()
        if not self.hold:
            self.flush()

    def kill(self, id: int, sig: int = signal.SIGTERM) -> None:
        self._send({"op": "kill", "id": id, "sig": int(sig)})

    def recall(self, id: int) -> None:
        """Ask the agent to take back the standby task `id`. Unlike LocalSpawner.cancel the answer is not at
        hand: it comes as a "cancelled" event (`ok` false: it started, and an exit naming it as "next" came
        before the answer)."""
        self._send({"op": "cancel", "id": int(id)})

    def fileno(self) -> int:
        """Readable when the agent has sent events (or died)."""
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def timeout_hint(self) -> float | None:
        return 0.0 if self._pending else None

    @property
    def alive(self) -> bool:
        return not self._eof

    def _read(self) -> None:
        while not self._eof:
            try:
                chunk = os.read(self.fileno(), 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                self._eof = True
                break
            self._buf += chunk

    def poll_events(self) -> list[Event]:
        """Events the agent has sent so far, without blocking (a line is one event, or an array of them)."""
        events, self._pending = self._pending, []
        self._read()
        if b"\n" in self._buf:
            *lines, self._buf = self._buf.split(b"\n")
            for ln in lines:
                if ln:
                    try:
                        got = json.loads(ln)
                    except ValueError:  # not the agent's: what the platform launcher printed (its death?)
                        log.warning("node agent's output: %s", ln[:300].decode(errors="replace"))
                        continue
                    if isinstance(got, list):
                        events += got
                    else:
                        events.append(got)
            held = self.held
            for ev in events:
                kind = ev.get("ev")
                if kind == "exit" or kind == "error" or (kind == "cancelled" and ev.get("ok")):
                    held.discard(ev["id"])
        if self._eof and self.lost is None and not self._closing:
            self._lose("exited")
            events += self._pending
            self._pending = []
        return events

    def _lose(self, why: str) -> None:
        """The agent is gone unasked (its node failed, or someone killed it): its tasks' exits will never
        come, so each task it held ends now as an error (a job retried by its policy, on another node), and
        what is sent to it later is dropped."""
        self.lost = why
        self._pending += [self._lost_event(i) for i in sorted(self.held)]
        self.held.clear()

    def _lost_event(self, id: int) -> Event:
        return {"ev": "error", "id": id, "lost": True,
                "msg": f"its node agent {self.lost}: the task's end was never reported, it may have run in part"}

    def events(self) -> Iterator[Event]:
        return iter(self.poll_events())

    def close(self, timeout: float = 30.0) -> list[Event]:
        """Ask the agent to stop its tasks and exit; return the events it sent meanwhile."""
        events: list[Event] = []
        if self.proc is None:
            return events
        self._closing = True
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
        self.base: dict[str, str] | None = None  # set by an "env" message

    def _emit(self, events: list[Event]) -> None:
        if len(events) == 1:
            self.out += _dumps(events[0])
        elif events:
            self.out += _dumps(events)
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
            extra = msg.get("extra")
            env = msg.get("env") if extra is None else LayeredEnv(self.base or dict(os.environ), extra)
            self.sp.spawn(msg["id"], msg["argv"], cwd=msg.get("cwd"), env=env,
                          stdout=msg.get("stdout"), stderr=msg.get("stderr"),
                          shell=bool(msg.get("shell")), timeout=msg.get("timeout"),
                          standby=bool(msg.get("standby")))
        elif op == "cancel":  # answered at once: a task that started has its predecessor's "next" ahead of this
            self.out += _dumps({"ev": "cancelled", "id": msg["id"], "ok": self.sp.cancel(int(msg["id"]))})
        elif op == "env":
            self.base = dict(msg["env"])
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
