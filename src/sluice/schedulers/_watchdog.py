"""Run one command as if it were a batch allocation: enforce its wall time and record how it ended.

Usage: ``python -I path/to/_watchdog.py STATUS_FILE SECONDS GRACE -- argv...`` (stdlib only, so it runs
isolated from PYTHONPATH and needs no installed sluice).

The local scheduler starts this in a new session. It runs ``argv`` in its own process group with
``SLUICE_ALLOCATION_END`` (epoch seconds) and ``SLUICE_BATCH_JOB=local:<pid>:<starttime>`` in its
environment. At the wall time, or on SIGTERM/SIGINT/SIGHUP (a cancel), it sends SIGTERM to the group, then
SIGKILL after GRACE seconds, like a batch scheduler ending an allocation. STATUS_FILE (JSON, replaced
atomically) holds ``{"state": "running", ...}`` and finally ``finished|failed|timeout|cancelled`` with the
exit code (negative for a signal).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from sluice import environ

_cancelled = False


def proc_start_time(pid: int) -> str:
    """Start time of ``pid`` in clock ticks since boot ("0" without /proc): guards against pid reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def write_status(path: Path, **data: object) -> None:
    """Replace the status file atomically, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _cancelled
    _cancelled = True


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _end_child(child: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the child's group, SIGKILL it after ``grace`` seconds; return the child's exit code."""
    _kill_group(child.pid, signal.SIGTERM)
    try:
        return child.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _kill_group(child.pid, signal.SIGKILL)
        return child.wait()


def run(status: Path, seconds: float, grace: float, argv: list[str]) -> int:
    """Run ``argv`` under the wall time; return its exit code (128+signal if killed, as a shell would)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    start = time.time()
    end = start + seconds
    env = dict(os.environ)
    env[environ.ALLOCATION_END] = str(int(end))
    env[environ.BATCH_JOB] = f"local:{os.getpid()}:{proc_start_time(os.getpid())}"
    try:
        child = subprocess.Popen(argv, env=env, start_new_session=True)
    except OSError as exc:
        write_status(status, state="failed", exit_code=127, message=f"cannot start {argv[0]}: {exc}")
        return 127
    write_status(status, state="running", pid=child.pid, start=start, end=end)
    state, code = _supervise(child, end, grace)
    _kill_group(child.pid, signal.SIGKILL)  # like an allocation ending: no stragglers outlive it
    write_status(status, state=state, exit_code=code, message=_message(state, seconds, code))
    return code if code >= 0 else 128 - code


def _supervise(child: subprocess.Popen[bytes], end: float, grace: float) -> tuple[str, int]:
    while True:
        if _cancelled:
            return "cancelled", _end_child(child, grace)
        remaining = end - time.time()
        if remaining <= 0:
            return "timeout", _end_child(child, grace)
        try:
            code = child.wait(timeout=min(remaining, 0.1))
        except subprocess.TimeoutExpired:
            continue
        return ("finished" if code == 0 else "failed"), code


def _message(state: str, seconds: float, code: int) -> str:
    if state == "timeout":
        return f"killed at its wall time of {seconds:g} s"
    if state == "cancelled":
        return "cancelled"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


def main(args: list[str]) -> int:
    """Parse ``STATUS SECONDS GRACE -- argv...`` and run."""
    if len(args) < 5 or args[3] != "--":
        print("usage: _watchdog.py STATUS SECONDS GRACE -- argv...", file=sys.stderr)
        return 2
    return run(Path(args[0]), float(args[1]), float(args[2]), args[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
