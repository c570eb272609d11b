"""Job states, the one transition table, and the decisions that follow a run: pure policy, no database.

Every change is a `Change` checked against TRANSITIONS; `sluice.api.transitions.apply` is the only code that
writes one (as the new state and one event per step). Steps with nothing to do are fast-forwarded in one write
(`Change.via`), each step still an event. What happens after a run that failed, timed out or was cut short is
decided here, once (`after_exit`, `after_failure`), and tested without processes or a database.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sluice.errors import IllegalTransition, UserError


class State(StrEnum):
    CREATED = "CREATED"
    AWAITING_PARENTS = "AWAITING_PARENTS"
    READY = "READY"
    STAGED_IN = "STAGED_IN"
    PREPROCESSED = "PREPROCESSED"
    RUNNING = "RUNNING"
    RUN_DONE = "RUN_DONE"
    RUN_ERROR = "RUN_ERROR"
    RUN_TIMEOUT = "RUN_TIMEOUT"
    RESTART_READY = "RESTART_READY"
    POSTPROCESSED = "POSTPROCESSED"
    JOB_FINISHED = "JOB_FINISHED"
    FAILED = "FAILED"
    USER_KILLED = "USER_KILLED"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.CREATED: frozenset({S.AWAITING_PARENTS, S.READY, S.USER_KILLED}),
    S.AWAITING_PARENTS: frozenset({S.READY, S.FAILED, S.USER_KILLED}),
    S.READY: frozenset({S.STAGED_IN, S.AWAITING_PARENTS, S.FAILED, S.USER_KILLED}),
    S.STAGED_IN: frozenset({S.PREPROCESSED, S.AWAITING_PARENTS, S.FAILED, S.USER_KILLED}),
    S.PREPROCESSED: frozenset({S.RUNNING, S.AWAITING_PARENTS, S.USER_KILLED}),
    S.RUNNING: frozenset({S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.RESTART_READY, S.USER_KILLED}),
    S.RUN_DONE: frozenset({S.POSTPROCESSED, S.RESTART_READY, S.FAILED, S.USER_KILLED}),
    S.RUN_ERROR: frozenset({S.RESTART_READY, S.FAILED, S.USER_KILLED}),
    S.RUN_TIMEOUT: frozenset({S.RESTART_READY, S.FAILED, S.USER_KILLED}),
    S.RESTART_READY: frozenset({S.RUNNING, S.AWAITING_PARENTS, S.USER_KILLED}),
    S.POSTPROCESSED: frozenset({S.JOB_FINISHED, S.FAILED, S.USER_KILLED}),
    S.JOB_FINISHED: frozenset({S.RESTART_READY}),  # a user may re-run a finished job
    S.FAILED: frozenset({S.RESTART_READY, S.READY, S.AWAITING_PARENTS}),
    S.USER_KILLED: frozenset({S.RESTART_READY, S.READY, S.AWAITING_PARENTS}),
}

RUNNABLE = frozenset({S.PREPROCESSED, S.RESTART_READY})
"""A launcher may claim and start these."""
PROCESSABLE = frozenset({S.READY, S.STAGED_IN, S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.POSTPROCESSED})
"""Work for a launcher's transition pool (stage-in, preprocess, postprocess, error handling)."""
WAITING = frozenset({S.CREATED, S.AWAITING_PARENTS})
ACTIVE = frozenset({S.RUNNING})
END = frozenset({S.JOB_FINISHED, S.FAILED, S.USER_KILLED})
_GROUPS = (RUNNABLE, PROCESSABLE, WAITING, ACTIVE, END)
assert sum(map(len, _GROUPS)) == len(State) and frozenset().union(*_GROUPS) == set(State), "groups must partition"
assert set(TRANSITIONS) == set(State)

RETRY_SOURCES = frozenset({S.RUNNING, S.RUN_ERROR, S.RUN_TIMEOUT})
"""Moving from these to RESTART_READY spends one retry."""


def parse_state(name: str) -> State:
    """A state from user text (any case); unknown names are a user error listing the valid ones."""
    try:
        return State(name.strip().upper())
    except ValueError:
        raise UserError(f"unknown state {name!r}; valid states: {', '.join(State)}") from None


_ALLOWED = frozenset((a.value, b.value) for a, bs in TRANSITIONS.items() for b in bs)


def check(from_state: str | None, to_state: str) -> None:
    """Raise IllegalTransition unless from_state -> to_state is in the table."""
    if from_state is None:
        if to_state != S.CREATED:
            raise IllegalTransition(f"a new job starts in CREATED, not {to_state}")
        return
    if (from_state, to_state) not in _ALLOWED:
        allowed = ", ".join(sorted(TRANSITIONS[State(from_state)])) or "nothing"
        raise IllegalTransition(f"a job cannot go from {from_state} to {to_state}; from {from_state}: {allowed}")


def check_path(start: str | None, path: Iterable[str]) -> None:
    prev = start
    for st in path:
        check(prev, st)
        prev = st


def ready_path(needs_stage_in: bool, needs_preprocess: bool) -> tuple[State, ...]:
    """The states a job passes from READY on its own: stops where real work (stage-in, preprocess) waits."""
    if needs_stage_in:
        return (S.READY,)
    if needs_preprocess:
        return (S.READY, S.STAGED_IN)
    return (S.READY, S.STAGED_IN, S.PREPROCESSED)


def default_actor() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


@dataclass
class Change:
    """One job moving from_state -> (via...) -> to_state; `fields` sets other columns in the same write."""

    job_id: int
    from_state: str
    to_state: str
    message: str | None = None
    data: Any = None
    via: tuple[str, ...] = ()
    at: float | None = None
    via_at: tuple[float, ...] | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    def path(self) -> tuple[str, ...]:
        return (*self.via, self.to_state)


def event_rows(c: Change, actor: str, now: float) -> list[dict[str, Any]]:
    """The events one change writes: one per step, the last carrying the message and data."""
    t_end = c.at if c.at is not None else now
    times = c.via_at or (t_end,) * len(c.via)
    rows, prev = [], c.from_state
    for st, t in zip(c.via, times, strict=True):
        rows.append({"job_id": c.job_id, "from_state": prev, "to_state": st, "timestamp": t,
                     "actor": actor, "message": None, "data": None})
        prev = st
    rows.append({"job_id": c.job_id, "from_state": prev, "to_state": c.to_state, "timestamp": t_end,
                 "actor": actor, "message": c.message, "data": c.data})
    return rows


RETRY_POLICIES = ("retry", "fail")
"""What an app does after an error or a timeout: retry (within the job's budget) or fail at once."""
FREE = {"session_id": None}
"""The fields a change sets when the launcher lets go of the job."""
LAUNCHER_ONLY = frozenset({S.RUNNING, S.RUN_DONE, S.RUN_ERROR, S.RUN_TIMEOUT, S.STAGED_IN, S.PREPROCESSED,
                           S.POSTPROCESSED})
"""States that only the launcher and its transitions set: a user putting a job there would leave it stuck."""


def spends_retry(c: Change) -> bool:
    """Whether writing this change spends one of the job's retries."""
    prev: str = c.from_state
    for st in c.path():
        if st == S.RESTART_READY and prev in RETRY_SOURCES:
            return True
        prev = st
    return False


def after_failure(job_id: int, frm: str, why: str | None, *, retry_count: int, max_retries: int,
                  via: str | None = None, policy: str = "retry", data: Any = None, at: float | None = None,
                  note: str = "") -> list[Change]:
    """The changes for a run that did not succeed: retried while policy and budget allow, else FAILED.

    `frm` is RUNNING (the process ended or was lost) or RUN_ERROR / RUN_TIMEOUT (after a handler ran). From
    RUNNING, `via` (RUN_ERROR or RUN_TIMEOUT) records the cause as its own step; with no `via` the cause goes
    on the retry. Every retry is bounded by max_retries, timeouts included (Balsam retried timeouts forever).
    `note` is what a handler said. Every change lets go of the job's launcher session.
    """
    out: list[Change] = []
    told = False  # the cause is on record already (the `via` step carries it)
    if via is not None and frm == S.RUNNING:
        out.append(Change(job_id, frm, via, why, data=data, at=at, fields=FREE))
        frm, told = via, True
    tail = f"; {note}" if note else ""
    cause = f": {why}" if why and not told else ""
    if policy != "fail" and retry_count < max_retries:
        out.append(Change(job_id, frm, S.RESTART_READY, f"retry {retry_count + 1} of {max_retries}{cause}{tail}",
                          at=at, fields=FREE))
        return out
    if frm == S.RUNNING:  # FAILED is reached from RUN_ERROR, never straight from RUNNING
        out.append(Change(job_id, frm, S.RUN_ERROR, why, data=data, at=at, fields=FREE))
        frm = S.RUN_ERROR
    reason = "policy says fail" if policy == "fail" else f"no retries left ({max_retries} allowed)"
    detail = f": {why}" if why and policy != "fail" else ""
    out.append(Change(job_id, frm, S.FAILED, f"{reason}{detail}{tail}", at=at, fields=FREE))
    return out


def exit_state(rc: int, timed_out: bool) -> State:
    """Where a run's end puts the job: RUN_DONE on exit 0, RUN_TIMEOUT past its wall time, else RUN_ERROR."""
    if timed_out:
        return S.RUN_TIMEOUT
    return S.RUN_DONE if rc == 0 else S.RUN_ERROR


def needs_hook(after: str, *, postprocess: str | None, stage_out: list[Any] | None, error_handler: str | None,
               timeout_handler: str | None) -> bool:
    """Whether the transition pool must take the job after its run (a hook to run or files to send)."""
    if after == S.RUN_DONE:
        return bool(postprocess or stage_out)
    if after == S.RUN_ERROR:
        return bool(error_handler)
    return bool(timeout_handler)


def after_exit(job_id: int, rc: int, timed_out: bool, *, retry_count: int, max_retries: int, on_error: str,
               on_timeout: str, needs_pool: bool, t: float, why: str | None = None) -> tuple[list[Change], bool]:
    """The changes for a finished process, and whether the pool must take it from there (hooks to run).

    The common case, exit 0 with nothing to postprocess, fast-forwards RUNNING to JOB_FINISHED in one write.
    """
    if not timed_out and rc == 0:
        if needs_pool:
            return [Change(job_id, S.RUNNING, S.RUN_DONE, None, at=t)], True
        return [Change(job_id, S.RUNNING, S.JOB_FINISHED, None, at=t, via=(S.RUN_DONE, S.POSTPROCESSED),
                       via_at=(t, t), fields=FREE)], False
    via = S.RUN_TIMEOUT if timed_out else S.RUN_ERROR
    msg = why or (f"exit code {rc}" if not timed_out else "exceeded its wall time")
    data = {"exit_code": rc}
    if needs_pool:
        return [Change(job_id, S.RUNNING, via, msg, data=data, at=t)], True
    return after_failure(job_id, S.RUNNING, msg, via=via, retry_count=retry_count, max_retries=max_retries,
                         policy=on_timeout if timed_out else on_error, data=data, at=t), False


BUSY_LABELS = {S.READY.value: "READY (staging in)", S.STAGED_IN.value: "STAGED_IN (preprocessing)",
               S.RUN_DONE.value: "RUN_DONE (postprocessing)", S.POSTPROCESSED.value: "POSTPROCESSED (staging out)",
               S.RUN_ERROR.value: "RUN_ERROR (handling)", S.RUN_TIMEOUT.value: "RUN_TIMEOUT (handling)"}


def shown(state: str, held: bool, deadline: float | None = None, updated_at: float = 0.0,
          now: float | None = None) -> str:
    """A state as `sluice ls` shows it: a job a launcher or the service holds between runs says what is being
    done to it (a job waiting on a transfer says so), and a job past its deadline says so."""
    label = BUSY_LABELS.get(state, state) if held else state
    if deadline is not None:
        if state in END:
            if state == S.JOB_FINISHED and updated_at > deadline:
                label += " (late)"
        elif (now if now is not None else time.time()) > deadline:
            label += " (past deadline)"
    return label
