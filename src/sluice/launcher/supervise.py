"""Run the launcher in a child process that dies gracefully with its parent, even after `kill -9`.

The process a user or batch script starts (`sluice launcher`) only waits and forwards signals; the launcher
itself runs in a forked child with PR_SET_PDEATHSIG=SIGTERM. If the parent is killed outright, the kernel
sends the child SIGTERM, and it stops the way it does at the end of an allocation: running jobs are
stopped and marked RUN_TIMEOUT for retry, finished ones are written, the session is closed. Without this a
`kill -9` would orphan the jobs (they lead their own sessions), which could then finish a second time after
the next launcher retried them.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

from sluice.errors import Fault, one_line
from sluice.launcher.options import EXIT_FAULT

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the heartbeat still recovers the jobs, later
        return
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def supervised(target: Callable[[], int]) -> int:
    """Run target() in a child; return its exit code. Signals to this process are passed on to the child."""
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            _die_with_parent(parent)
            code = target()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Fault as e:  # the environment failed (a full disk at the start, say): one line, as the CLI says
            sys.stderr.write(f"sluice: error: {one_line(e)}\n")
            code = EXIT_FAULT
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(s, forward)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status)
