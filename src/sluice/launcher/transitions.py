"""The work between runs: stage-in, preprocess, postprocess, stage-out, error and timeout handlers.

These run in a thread pool beside the launching loop and return the state changes to write; the loop never
waits for them. A hook is a shell command run in the job's directory with the job's environment, or
`py:module:function`, called with the Job. Transient failures (database, network) are retried; a job goes
FAILED only for its own faults, with the reason in its history. A full disk is never a job's fault: it is
raised (DiskFull or the OSError), so that the launcher stops and the job waits for the next one.
"""

from __future__ import annotations

import functools
import importlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sluice import environ, transfers
from sluice.api import Job, Workspace
from sluice.errors import DiskFull
from sluice.launcher.faults import is_full, low_space
from sluice.states import FREE, Change, S, after_failure

HOOK_TIMEOUT_S = 3600.0


def run_hook(ws: Workspace, job: Job, hook: str, what: str) -> tuple[bool, str]:
    """Run a hook; (ok, message). Its output goes to <name>.<what>.log in the job's directory."""
    cwd = job.path
    cwd.mkdir(parents=True, exist_ok=True)
    if hook.startswith("py:"):
        mod, _, fn = hook[3:].partition(":")
        try:
            sys.path.insert(0, str(cwd))
            try:
                result = getattr(importlib.import_module(mod), fn)(job)
            finally:
                sys.path.remove(str(cwd))
        except Exception as e:  # the user's hook failed: that is the job's fault, reported
            if is_full(e):
                raise
            return False, f"{what} hook {hook} raised {type(e).__name__}: {e}"
        return (result is not False), f"{what} hook {hook} returned {result!r}"
    app = ws.app(job.app)
    log = cwd / f"{job.name}.{what}.log"
    env = environ.job_environment(ws.path, job.id, app.environment, job.environment, job.threads_per_rank)
    with open(log, "ab") as out:
        try:
            p = subprocess.run(["/bin/sh", "-c", hook], cwd=cwd, env=env,
                               stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                               timeout=HOOK_TIMEOUT_S, start_new_session=True)
        except subprocess.TimeoutExpired:
            return False, f"{what} `{hook}` timed out after {HOOK_TIMEOUT_S:.0f} s"
    if p.returncode != 0:
        if (low := low_space(str(cwd))) is not None:
            raise DiskFull(f"disk full: job {job.id}: {what} `{hook}` exited {p.returncode} with {low}")
        return False, f"{what} `{hook}` exited {p.returncode} (see {log.name})"
    return True, f"{what} done"


def stage_in(job: Job) -> None:
    dest = job.path
    dest.mkdir(parents=True, exist_ok=True)
    for item in job.stage_in:
        if isinstance(item, dict) and "parents" in item:
            for parent in job.parents:
                transfers.copy(str(parent.path / item["parents"]), dest, link=bool(item.get("link", True)))
            continue
        src, to, link = transfers.entry(item)
        transfers.copy(src, dest / to if to else dest, link=link)


def stage_out(job: Job) -> None:
    for item in job.stage_out:
        src, to, _ = transfers.entry(item)
        if to is None:
            raise transfers.TransferError(f"stage-out entry {item!r} needs a dest")
        transfers.put(job.path / src, to)


def _attempt(fn: Any, *args: Any, tries: int = 3) -> None:
    for i in range(tries):
        try:
            fn(*args)
            return
        except transfers.TransferError as e:
            if not e.transient or i == tries - 1:
                raise
            time.sleep(2.0 * (i + 1))


def process(ws: Workspace, job_id: int, state: str, exit_info: dict[str, Any] | None = None) -> list[Change]:
    """Move one job forward from a processable state; returns the changes (session released at the end)."""
    job = ws.job(job_id)
    app = ws.app(job.app)
    if state == S.READY:
        try:
            _attempt(stage_in, job)
        except (transfers.TransferError, OSError) as e:
            if is_full(e):
                raise
            return [Change(job_id, S.READY, S.FAILED, f"stage-in failed: {e}", fields=FREE)]
        return _preprocess(ws, job, app.preprocess, S.READY, staged=True)
    if state == S.STAGED_IN:
        return _preprocess(ws, job, app.preprocess, S.STAGED_IN, staged=False)
    if state in (S.RUN_DONE, S.POSTPROCESSED):
        out: list[Change] = []
        frm: str = state
        if state == S.RUN_DONE:
            if app.postprocess:
                ok, msg = run_hook(ws, job, app.postprocess, "postprocess")
                if not ok:
                    return [Change(job_id, S.RUN_DONE, S.FAILED, msg, fields=FREE)]
            out.append(Change(job_id, S.RUN_DONE, S.POSTPROCESSED, None))
            frm = S.POSTPROCESSED
        try:
            _attempt(stage_out, job)
        except (transfers.TransferError, OSError) as e:
            if is_full(e):
                raise
            return out + [Change(job_id, frm, S.FAILED, f"stage-out failed: {e}", fields=FREE)]
        return out + [Change(job_id, frm, S.JOB_FINISHED, None, fields=FREE)]
    if state in (S.RUN_ERROR, S.RUN_TIMEOUT):
        hook = app.error_handler if state == S.RUN_ERROR else app.timeout_handler
        note = ""
        if hook:
            ok, note = run_hook(ws, job, hook, "error_handler" if state == S.RUN_ERROR else "timeout_handler")
        return after_failure(job_id, state, None, retry_count=job.retry_count, max_retries=job.max_retries,
                             policy=app.on_error if state == S.RUN_ERROR else app.on_timeout, note=note)
    return []


def _preprocess(ws: Workspace, job: Job, hook: str | None, frm: str, staged: bool) -> list[Change]:
    out: list[Change] = []
    if staged:
        out.append(Change(job.id, S.READY, S.STAGED_IN, None))
        frm = S.STAGED_IN
    if hook:
        ok, msg = run_hook(ws, job, hook, "preprocess")
        if not ok:
            return out + [Change(job.id, frm, S.FAILED, msg, fields=FREE)]
    return out + [Change(job.id, frm, S.PREPROCESSED, None, fields=FREE)]


class Pool:
    """`process` for jobs between runs, in `workers` threads beside the launching loop (at most 4 a worker
    queued). What a job's work produced goes to `on_done(changes)`, from a pool thread; a failure that is not
    the job's (the database, the file system) to `on_error(job_id, exception)`."""

    def __init__(self, ws: Workspace, workers: int, *, on_done: Callable[[list[Change]], None],
                 on_error: Callable[[int, Exception], None]) -> None:
        self.ws = ws
        self.limit = 4 * workers
        self.on_done = on_done
        self.on_error = on_error
        self.inflight = 0
        self._lock = threading.Lock()
        self._exec = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sluice-transition")

    def room(self) -> int:
        return max(0, self.limit - self.inflight)

    def submit(self, job_id: int, state: str) -> None:
        with self._lock:
            self.inflight += 1
        fut = self._exec.submit(process, self.ws, job_id, state)
        fut.add_done_callback(functools.partial(self._processed, job_id))

    def _processed(self, job_id: int, fut: Future[list[Change]]) -> None:
        with self._lock:
            self.inflight -= 1
        try:
            changes = fut.result()
        except Exception as e:
            self.on_error(job_id, e)
            return
        self.on_done(changes)

    def shutdown(self) -> None:
        """Wait for the work under way; what is queued is dropped (reported to `on_error`)."""
        self._exec.shutdown(wait=True, cancel_futures=True)
