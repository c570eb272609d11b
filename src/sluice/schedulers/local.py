"""A background process on this machine treated as an allocation (laptops, login nodes, tests).

The command runs under :mod:`sluice.schedulers._watchdog`, which enforces the wall time (psij's local
executor does not) and records how it ended in ``<stem>.status.json`` in the workdir. The native id is
``<watchdog pid>:<its start time>`` from ``/proc/PID/stat``, so a reused pid is never mistaken for our job.
Ids are mapped to their status files through symlinks in ``state_dir``, so a restarted service can still
ask about jobs it submitted earlier.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from sluice.schedulers import _watchdog
from sluice.schedulers._watchdog import proc_start_time
from sluice.schedulers.base import (
    BatchRequest,
    BatchState,
    BatchStatus,
    Scheduler,
    SchedulerError,
    safe_name,
    validate,
)

_FINAL = {
    "finished": BatchState.FINISHED,
    "failed": BatchState.FAILED,
    "timeout": BatchState.TIMEOUT,
    "cancelled": BatchState.CANCELLED,
}


class LocalScheduler(Scheduler):
    """Run launcher batch jobs as local background processes.

    Parameters
    ----------
    seconds_per_minute:
        Length of one ``wall_time_min`` minute in seconds; tests shrink it to get short wall times.
    grace_s:
        Seconds between SIGTERM and SIGKILL when the wall time is reached or the job is cancelled.
    state_dir:
        Where the id -> status-file index lives (default: ``$TMPDIR/sluice-local-<uid>``).
    """

    name: ClassVar[str] = "local"

    def __init__(
        self, seconds_per_minute: float = 60.0, grace_s: float = 10.0, state_dir: Path | None = None
    ) -> None:
        self._seconds_per_minute = seconds_per_minute
        self._grace_s = grace_s
        self._state_dir = state_dir or Path(tempfile.gettempdir()) / f"sluice-local-{os.getuid()}"
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def check(self) -> None:
        """Always available."""

    def submit(self, req: BatchRequest) -> str:
        """Start the watchdog and the command in a new session; return ``pid:starttime``."""
        validate(req)
        req.workdir.mkdir(parents=True, exist_ok=True)
        self._state_dir.mkdir(parents=True, exist_ok=True)
        fd, out = tempfile.mkstemp(prefix=f"{safe_name(req.job_name)}-", suffix=".out", dir=req.workdir)
        stem = Path(out).with_suffix("")
        seconds = req.wall_time_min * self._seconds_per_minute
        # Run the watchdog by path in isolated mode: it needs only the stdlib, whatever PYTHONPATH says.
        argv = [sys.executable, "-I", _watchdog.__file__, str(stem) + ".status.json",
                repr(seconds), repr(self._grace_s), "--", *req.command]
        env = {**os.environ, **req.env}
        with os.fdopen(fd, "wb") as stdout, open(str(stem) + ".err", "wb") as stderr:
            try:
                proc = subprocess.Popen(argv, cwd=req.workdir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=stdout, stderr=stderr, start_new_session=True)
            except OSError as exc:
                raise SchedulerError(f"local: cannot start {argv[0]}: {exc}") from None
        native_id = f"{proc.pid}:{proc_start_time(proc.pid)}"
        self._procs[native_id] = proc
        link = self._state_dir / native_id
        link.unlink(missing_ok=True)  # a leftover from before a reboot that reused this pid and start time
        link.symlink_to(str(stem) + ".status.json")
        return native_id

    def status(self, native_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """See :meth:`Scheduler.status`."""
        return {i: self._status_one(i) for i in native_ids}

    def cancel(self, native_id: str) -> None:
        """SIGTERM the watchdog, which ends the command's process group and records CANCELLED."""
        pid = self._live_pid(native_id)
        if pid is None:
            return
        # The marker covers a cancel that lands before the watchdog has installed its signal handler.
        Path(os.path.realpath(self._state_dir / native_id)).with_suffix(".cancel").touch()
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def _status_one(self, native_id: str) -> BatchStatus:
        data = self._read(native_id)
        state = _FINAL.get(str(data.get("state")))
        if state is not None:
            code = data.get("exit_code")
            message = str(data.get("message", ""))
            return BatchStatus(native_id, state, message, code if isinstance(code, int) else None)
        alive = self._live_pid(native_id) is not None
        if alive:
            return BatchStatus(native_id, BatchState.RUNNING if data else BatchState.QUEUED)
        if not (self._state_dir / native_id).is_symlink():
            return BatchStatus(native_id, BatchState.FINISHED, "unknown to the local scheduler (gone)")
        marker = Path(os.path.realpath(self._state_dir / native_id)).with_suffix(".cancel")
        if marker.exists():
            return BatchStatus(native_id, BatchState.CANCELLED, "cancelled before it started")
        return BatchStatus(native_id, BatchState.FAILED, "the watchdog died without recording an exit")

    def _read(self, native_id: str) -> dict[str, Any]:
        try:
            data = json.loads((self._state_dir / native_id).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _live_pid(self, native_id: str) -> int | None:
        """The watchdog's pid if that very process still runs (reaping it if it is our zombie)."""
        proc = self._procs.get(native_id)
        if proc is not None and proc.poll() is not None:
            return None
        pid_s, _, start = native_id.partition(":")
        if not pid_s.isdigit():
            return None
        pid = int(pid_s)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        if start != proc_start_time(pid) or _is_zombie(pid):
            return None
        return pid


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False

