"""The one narrow interface the service uses to run launcher batch jobs on any batch scheduler.

Protocol
--------
``submit(req) -> native_id`` writes a batch script into ``req.workdir`` that exports ``req.env`` and
``SLUICE_BATCH_JOB=<scheduler>:<native id>`` and runs ``req.command`` (an argv list, quoted with
:func:`shlex.join`, never re-split by a shell) inside an allocation of ``req.num_nodes`` nodes.

``status(ids)`` answers for every id asked, and never raises:

* an id the scheduler no longer knows is *terminal*: ``FINISHED``, unless the scheduler left evidence of a
  failure or time-out (schedulers forget finished jobs; Balsam's agent crashed on PBS "Unknown Job Id");
* a state code we have no entry for is ``UNKNOWN`` with a logged warning (never an assert);
* when the status command itself fails (server down), every id is ``UNKNOWN`` with the error as message:
  not terminal, so the caller asks again later instead of declaring live jobs finished.

``cancel(id)`` of a job that already finished is not an error.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, NamedTuple

from sluice.errors import UserError

log = logging.getLogger(__name__)

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class BatchRequest:
    """One launcher batch job: what to run, on how many nodes, for how long, and where its files go."""

    command: list[str]
    num_nodes: int
    wall_time_min: int
    workdir: Path
    queue: str | None = None
    project: str | None = None
    job_name: str = "sluice"
    env: dict[str, str] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)


class BatchState(StrEnum):
    """State of a batch job as the service sees it."""

    QUEUED = "queued"
    """Waiting for its allocation (held jobs too)."""
    RUNNING = "running"
    """Holds its nodes (including suspended or completing)."""
    FINISHED = "finished"
    """Ended with exit code 0, or the scheduler forgot it without evidence of failure."""
    FAILED = "failed"
    """Ended with a non-zero exit code or a node/boot failure: the launcher's jobs need recovery."""
    TIMEOUT = "timeout"
    """Killed at its wall time: the launcher's unfinished jobs are RUN_TIMEOUT and retried, not failed."""
    CANCELLED = "cancelled"
    """Removed by a user or by :meth:`Scheduler.cancel`."""
    UNKNOWN = "unknown"
    """The scheduler's answer could not be understood or obtained; not terminal: ask again later."""

    @property
    def is_terminal(self) -> bool:
        """True once the batch job can no longer run."""
        return self not in (BatchState.QUEUED, BatchState.RUNNING, BatchState.UNKNOWN)


@dataclass(frozen=True)
class BatchStatus:
    """What the scheduler says about one batch job; ``exit_code`` is negative for a signal."""

    native_id: str
    state: BatchState
    message: str = ""
    exit_code: int | None = None


class SchedulerError(UserError):
    """Submit or cancel failed; ``str()`` is one line that includes the scheduler's own text."""


class SchedulerUnavailable(SchedulerError):
    """The scheduler's command is not on this machine; the message names the command and the scheduler."""


class Scheduler(ABC):
    """Submit, poll and cancel launcher batch jobs; see the module docstring for the protocol."""

    name: ClassVar[str]

    @abstractmethod
    def submit(self, req: BatchRequest) -> str:
        """Submit ``req`` and return the scheduler's native id; raise :class:`SchedulerError` on refusal."""

    @abstractmethod
    def status(self, native_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """Return a status for every id in ``native_ids``; never raises."""

    @abstractmethod
    def cancel(self, native_id: str) -> None:
        """Cancel a queued or running job; a job that already ended is left alone."""

    @abstractmethod
    def check(self) -> None:
        """Raise :class:`SchedulerUnavailable` if this scheduler cannot be used on this machine."""

    def available(self) -> bool:
        """True if :meth:`check` passes."""
        try:
            self.check()
        except SchedulerUnavailable:
            return False
        return True


class _Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


class BatchScheduler(Scheduler):
    """Shared plumbing for schedulers driven by commands: every command goes through :meth:`_run`.

    Subclasses set ``name``, ``_label`` (for messages) and ``_commands`` (checked by :meth:`check`).
    """

    _label: ClassVar[str]
    _commands: ClassVar[tuple[str, ...]]
    _timeout_s: ClassVar[float] = 60.0

    def check(self) -> None:
        """See :meth:`Scheduler.check`."""
        for cmd in self._commands:
            if shutil.which(cmd) is None:
                raise SchedulerUnavailable(
                    f"{self._label}: {cmd} not found on PATH; is this a {self._label} machine?"
                )

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> _Result:
        """Run one scheduler command (the single seam to the outside world; tests replace it)."""
        try:
            proc = subprocess.run(
                list(argv), input=stdin, capture_output=True, text=True, timeout=self._timeout_s
            )
        except FileNotFoundError:
            raise SchedulerUnavailable(
                f"{self._label}: {argv[0]} not found on PATH; is this a {self._label} machine?"
            ) from None
        except subprocess.TimeoutExpired:
            raise SchedulerError(
                f"{self._label}: {argv[0]} did not answer in {self._timeout_s:.0f} s"
            ) from None
        return _Result(proc.returncode, proc.stdout, proc.stderr)

    def _run_ok(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run a command that must succeed; its stdout, or SchedulerError with its own text."""
        res = self._run(argv, stdin)
        if res.returncode != 0:
            raise SchedulerError(f"{self._label}: {argv[0]} failed: {one_line(res.stderr or res.stdout)}")
        return res.stdout

    def _unknown_all(self, native_ids: Sequence[str], why: str) -> dict[str, BatchStatus]:
        log.warning("%s: status query failed: %s", self._label, why)
        return {i: BatchStatus(i, BatchState.UNKNOWN, why) for i in native_ids}

    def _map_state(self, table: Mapping[str, BatchState], code: str, native_id: str) -> BatchState:
        """Look a native state code up; an unknown code is UNKNOWN plus a warning, never a crash."""
        state = table.get(code)
        if state is None:
            log.warning("%s job %s: unrecognized state %r, reporting UNKNOWN", self._label, native_id, code)
            return BatchState.UNKNOWN
        return state


def one_line(text: str) -> str:
    """Collapse a command's output into one line for an error message."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return "; ".join(lines) if lines else "(no output)"


def write_script(
    req: BatchRequest, directives: Callable[[Path], Sequence[str]], batch_job_var: str, suffix: str
) -> Path:
    """Write a bash batch script into ``req.workdir`` (created) under a unique name, and return its path.

    ``directives(stem)`` gives the scheduler's directive lines; ``stem`` is the script's path without its
    suffix, unique per submission, for naming the job's output files.

    ``batch_job_var`` is the shell expression for ``SLUICE_BATCH_JOB`` (e.g. ``slurm:${SLURM_JOB_ID}``); it
    is expanded by the job's shell, so it must come from our own code, never from the user.
    """
    req.workdir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{safe_name(req.job_name)}-", suffix=suffix, dir=req.workdir)
    path = Path(name)
    with os.fdopen(fd, "w") as f:
        f.write(script_text(req, directives(path.with_suffix("")), batch_job_var))
    path.chmod(0o755)
    return path


def script_text(req: BatchRequest, directives: Sequence[str], batch_job_var: str) -> str:
    """The batch script: directives, env exports, then ``exec`` of the launcher argv."""
    lines = ["#!/bin/bash", *directives, "", f"cd {shlex.quote(str(req.workdir))}"]
    for key, value in req.env.items():
        if not _ENV_NAME.match(key):
            raise SchedulerError(f"invalid environment variable name in batch request: {key!r}")
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append(f'export SLUICE_BATCH_JOB="{batch_job_var}"')
    lines.append(f"exec {shlex.join(req.command)}")
    return "\n".join(lines) + "\n"


def validate(req: BatchRequest) -> None:
    """Reject requests no scheduler can honour, with one clear line."""
    if req.num_nodes < 1:
        raise SchedulerError(f"batch request needs at least 1 node, got {req.num_nodes}")
    if req.wall_time_min < 1:
        raise SchedulerError(f"batch request needs a wall time of at least 1 minute, got {req.wall_time_min}")
    if not req.command:
        raise SchedulerError("batch request has an empty command")
    for text in (req.queue or "", req.project or "", req.job_name, *req.extra):
        if "\n" in text or "\r" in text:
            raise SchedulerError(f"batch request field contains a line break: {text!r}")


def hhmmss(minutes: int) -> str:
    """Minutes as ``HH:MM:SS`` (PBS and Cobalt wall-time format)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def safe_name(name: str) -> str:
    """A job name every scheduler accepts and no shell or directive parser misreads."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "sluice"
