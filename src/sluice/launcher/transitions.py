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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from sluice import environ
from sluice.api import Job, Workspace
from sluice.errors import DiskFull
from sluice.launcher.faults import is_full, low_space
from sluice.staging import Stager, stage_in_changes
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


def stage_in_batch(ws: Workspace, ids: list[int]) -> list[Change]:
    """Stage a batch of READY jobs in (staging.Stager: grouped by endpoint, retried), then run the preprocess
    hooks of those that have one; the changes. A full disk is raised: it is nobody's fault but the disk's."""
    jobs = ws.jobs(ids=ids)
    outcomes = Stager(ws.config.transfers).stage_in(jobs, lambda j: ws.parents(j.id))  # DiskFull propagates
    by_id = {j.id: j for j in jobs}
    hooks = {j.id: ws.app(j.app).preprocess for j in jobs}
    changes = stage_in_changes(outcomes, lambda jid: not hooks.get(jid))
    out: list[Change] = []
    for c in changes:
        if c.to_state == S.STAGED_IN:  # its preprocess hook runs now, here
            out += _preprocess(ws, by_id[c.job_id], hooks[c.job_id], S.READY, staged=True)
        else:
            out.append(c)
    return out


def process(ws: Workspace, job_id: int, state: str, exit_info: dict[str, Any] | None = None) -> list[Change]:
    """Move one job forward from a processable state; returns the changes (session released at the end)."""
    job = ws.job(job_id)
    app = ws.app(job.app)
    if state == S.READY:
        return stage_in_batch(ws, [job_id])
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
        if job.stage_out:
            (o,) = Stager(ws.config.transfers).stage_out([job])
            if o.error is not None:  # the outputs stay in the job's directory, named in the message
                return out + [Change(job_id, frm, S.FAILED, f"{o.error} (the outputs are kept in {job.path})",
                                     fields=FREE)]
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
        self.limit = max(64, 4 * workers)  # stage-ins go in batches: room for one of a useful size
        self.on_done = on_done
        self.on_error = on_error
        self.inflight = 0
        self._staging: list[int] = []
        self._stage_queued = False
        self._lock = threading.Lock()
        self._exec = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sluice-transition")

    def room(self) -> int:
        return max(0, self.limit - self.inflight)

    def submit(self, job_id: int, state: str) -> None:
        """Queue one job's work. READY jobs are staged in batches: the first starts a task that takes every
        READY job queued by the time it runs (one transfer batch per endpoint for all of them)."""
        with self._lock:
            self.inflight += 1
            if state == S.READY:
                self._staging.append(job_id)
                if self._stage_queued:
                    return
                self._stage_queued = True
        if state == S.READY:
            self._exec.submit(self._stage)
            return
        fut = self._exec.submit(process, self.ws, job_id, state)
        fut.add_done_callback(functools.partial(self._processed, job_id))

    def _stage(self) -> None:
        with self._lock:
            ids, self._staging, self._stage_queued = self._staging, [], False
        try:
            changes = stage_in_batch(self.ws, ids)
        except Exception as e:
            with self._lock:
                self.inflight -= len(ids)
            for jid in ids:
                self.on_error(jid, e)
            return
        with self._lock:
            self.inflight -= len(ids)
        self.on_done(changes)

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
