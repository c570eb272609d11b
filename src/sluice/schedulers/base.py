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

Command-driven schedulers (:class:`BatchScheduler`) share one template :meth:`~BatchScheduler.submit` and
:meth:`~BatchScheduler.cancel`, driven by a per-scheduler :class:`Spec` table (directive prefix, how each
option is spelled, the submit command, the native-id pattern, the state codes); each module adds only its
``status`` parser.
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

from sluice import environ
from sluice.errors import Fault, UserError, one_line

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


class SchedulerError(Fault):
    """A scheduler command failed (refused, broke, or did not answer); ``str()`` is one line with its own text.

    ``transient`` is True where asking again later could help (the scheduler is down or did not answer).
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class SchedulerUnavailable(SchedulerError):
    """The scheduler cannot be reached: its command is missing (not transient) or its server is down (transient)."""


class BadBatchRequest(UserError):
    """A batch request no scheduler can honour (0 nodes, an empty command, a line break, a bad env var name)."""


class Scheduler(ABC):
    """Submit, poll and cancel launcher batch jobs; see the module docstring for the protocol."""

    name: ClassVar[str]

    @abstractmethod
    def submit(self, req: BatchRequest) -> str:
        """Submit ``req`` and return the scheduler's native id.

        Raises :class:`BadBatchRequest` (a UserError) for a request no scheduler can honour, before anything is
        written, and :class:`SchedulerError` (a Fault) when the scheduler is missing, down or refuses it.
        """

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


@dataclass(frozen=True)
class Spec:
    """How one batch scheduler spells a submission: the table :meth:`BatchScheduler.submit` is driven by.

    ``options`` are the scheduler's options in the order they are written, as templates with the fields
    ``{name}`` (the job name made safe), ``{nodes}``, ``{minutes}``, ``{hhmmss}`` (the wall time),
    ``{workdir}`` and ``{stem}`` (the script's path without its suffix, unique per submission, for the job's
    output files); ``queue`` and ``project`` (fields ``{queue}``, ``{project}``) follow when the request has
    them, then the request's ``extra`` items as given.

    With a ``prefix`` (``#SBATCH``) every option is a directive line in the script; without one (Cobalt's
    script mode) they go on the submit command line instead, each split at its first space into two words.
    """

    label: str
    """The scheduler's name in messages (``Slurm``)."""
    commands: tuple[str, ...]
    """The commands :meth:`BatchScheduler.check` looks for on PATH."""
    prefix: str | None
    options: tuple[str, ...]
    queue: str
    project: str
    submit: tuple[str, ...]
    """The submit command's argv; the script's path is appended, or piped to it with ``stdin``."""
    job_id: re.Pattern[str]
    """Searched in the submit command's stdout; group 1 is the native id."""
    job_var: str
    """The scheduler's job-id variable: ``SLUICE_BATCH_JOB`` is exported as ``<name>:<job_var>``."""
    states: Mapping[str, BatchState]
    """Native state code -> :class:`BatchState`."""
    cancel: str
    """The cancel command, given the native id."""
    gone: tuple[str, ...] = ()
    """Lower-case texts by which the cancel command says the job has already ended (not an error)."""
    stdin: bool = False


# How a scheduler that is down (not one refusing a request) answers: Slurm "Unable to contact slurm
# controller" / "Socket timed out", PBS "cannot connect to server", LSF "LSF is down; try later", ...
_DOWN = re.compile(
    r"connection refused|cannot connect|unable to contact|not responding|timed out|try (again|later)"
    r"|temporarily unavailable",
    re.IGNORECASE,
)


class BatchScheduler(Scheduler):
    """A scheduler driven by commands and the :class:`Spec` table ``spec``; every command goes through :meth:`_run`.

    :meth:`submit`, :meth:`cancel` and :meth:`check` come from the table; subclasses write :meth:`status`.
    """

    spec: ClassVar[Spec]
    _timeout_s: ClassVar[float] = 60.0

    @property
    def _label(self) -> str:
        return self.spec.label

    def check(self) -> None:
        """See :meth:`Scheduler.check`."""
        for cmd in self.spec.commands:
            if shutil.which(cmd) is None:
                raise self._missing(cmd)

    def submit(self, req: BatchRequest) -> str:
        """Write the batch script into ``req.workdir``, submit it and return the native id from the table."""
        validate(req)
        self.check()
        spec = self.spec
        script = write_script(req, lambda stem: self._directives(req, stem), f"{self.name}:{spec.job_var}", ".sh")
        argv = list(spec.submit)
        if spec.prefix is None:
            argv += [w for o in self._options(req, script.with_suffix("")) for w in o.split(" ", 1)]
            argv += req.extra
        stdin = script.read_text() if spec.stdin else None
        if stdin is None:
            argv.append(str(script))
        out = self._run_ok(argv, stdin)
        m = spec.job_id.search(out)
        if m is None:
            raise SchedulerError(f"{spec.label}: {argv[0]} printed no job id: {output_line(out)}")
        return m.group(1)

    @classmethod
    def _options(cls, req: BatchRequest, stem: Path) -> list[str]:
        """The table's options for ``req``, filled in (without ``extra``)."""
        spec = cls.spec
        fields = {
            "name": safe_name(req.job_name),
            "nodes": req.num_nodes,
            "minutes": req.wall_time_min,
            "hhmmss": hhmmss(req.wall_time_min),
            "workdir": req.workdir,
            "stem": stem,
            "queue": req.queue,
            "project": req.project,
        }
        templates = [*spec.options, *([spec.queue] if req.queue else []), *([spec.project] if req.project else [])]
        return [t.format(**fields) for t in templates]

    @classmethod
    def _directives(cls, req: BatchRequest, stem: Path) -> list[str]:
        """The script's directive lines (none for a scheduler that takes its options on the command line)."""
        prefix = cls.spec.prefix
        if prefix is None:
            return []
        return [f"{prefix} {d}" for d in (*cls._options(req, stem), *req.extra)]

    def cancel(self, native_id: str) -> None:
        """Run the table's cancel command; the scheduler saying the job already ended is fine."""
        res = self._run([self.spec.cancel, native_id])
        text = (res.stderr + res.stdout).lower()
        if res.returncode != 0 and not any(g in text for g in self.spec.gone):
            raise self._failed(f"{self.spec.cancel} {native_id}", res)

    def _run(self, argv: Sequence[str], stdin: str | None = None) -> _Result:
        """Run one scheduler command (the single seam to the outside world; tests replace it)."""
        try:
            proc = subprocess.run(
                list(argv), input=stdin, capture_output=True, text=True, timeout=self._timeout_s
            )
        except FileNotFoundError:
            raise self._missing(argv[0]) from None
        except subprocess.TimeoutExpired:
            raise SchedulerUnavailable(
                f"{self._label}: {argv[0]} did not answer in {self._timeout_s:.0f} s", transient=True
            ) from None
        return _Result(proc.returncode, proc.stdout, proc.stderr)

    def _run_ok(self, argv: Sequence[str], stdin: str | None = None) -> str:
        """Run a command that must succeed; its stdout, or SchedulerError with its own text."""
        res = self._run(argv, stdin)
        if res.returncode != 0:
            raise self._failed(argv[0], res)
        return res.stdout

    def _missing(self, cmd: str) -> SchedulerUnavailable:
        return SchedulerUnavailable(f"{self._label}: {cmd} not found on PATH; is this a {self._label} machine?")

    def _failed(self, what: str, res: _Result) -> SchedulerError:
        """The error for a command that exited non-zero: SchedulerUnavailable (transient) if the server is down."""
        said = output_line(res.stderr or res.stdout)
        message = f"{self._label}: {what} failed: {said}"
        if _DOWN.search(said):
            return SchedulerUnavailable(message, transient=True)
        return SchedulerError(message)

    def _unknown_all(self, native_ids: Sequence[str], why: str) -> dict[str, BatchStatus]:
        log.warning("%s: status query failed: %s", self._label, why)
        return {i: BatchStatus(i, BatchState.UNKNOWN, why) for i in native_ids}

    def _map_state(self, code: str, native_id: str) -> BatchState:
        """Look a native state code up in the table; an unknown code is UNKNOWN plus a warning, never a crash."""
        state = self.spec.states.get(code)
        if state is None:
            log.warning("%s job %s: unrecognized state %r, reporting UNKNOWN", self._label, native_id, code)
            return BatchState.UNKNOWN
        return state


def output_line(text: str) -> str:
    """A command's output as one line for a message: its non-empty lines joined by ``;``, cut by :func:`one_line`."""
    return one_line("; ".join(ln.strip() for ln in text.splitlines() if ln.strip())) or "(no output)"


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
    """The batch script: directives, env exports, then ``exec`` of the launcher argv (``req`` validated)."""
    lines = ["#!/bin/bash", *directives, "", f"cd {shlex.quote(str(req.workdir))}"]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in req.env.items()]
    lines.append(f'export {environ.BATCH_JOB}="{batch_job_var}"')
    lines.append(f"exec {shlex.join(req.command)}")
    return "\n".join(lines) + "\n"


def validate(req: BatchRequest) -> None:
    """Reject requests no scheduler can honour with :class:`BadBatchRequest`, one clear line."""
    if req.num_nodes < 1:
        raise BadBatchRequest(f"batch request needs at least 1 node, got {req.num_nodes}")
    if req.wall_time_min < 1:
        raise BadBatchRequest(f"batch request needs a wall time of at least 1 minute, got {req.wall_time_min}")
    if not req.command:
        raise BadBatchRequest("batch request has an empty command")
    for key in req.env:
        if not _ENV_NAME.match(key):
            raise BadBatchRequest(f"invalid environment variable name in batch request: {key!r}")
    for text in (req.queue or "", req.project or "", req.job_name, *req.extra):
        if "\n" in text or "\r" in text:
            raise BadBatchRequest(f"batch request field contains a line break: {text!r}")


def hhmmss(minutes: int) -> str:
    """Minutes as ``HH:MM:SS`` (PBS and Cobalt wall-time format)."""
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def safe_name(name: str) -> str:
    """A job name every scheduler accepts and no shell or directive parser misreads."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "sluice"
