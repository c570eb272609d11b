"""Job states, the one transition table, and `apply()`: the only code that writes `jobs.state`.

Every change is checked against TRANSITIONS and recorded as an event (job, from, to, time, actor, message).
Steps with nothing to do are fast-forwarded in one write (`Change.via`), each step still an event.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, and_, exists, select

from sluice import db
from sluice.errors import IllegalTransition, UserError
from sluice.models import job_parents, jobs


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


def apply(conn: Connection, changes: Sequence[Change], actor: str | None = None, *,
          strict: bool = True, lock: bool = True) -> list[Change]:
    """Validate and write changes in the caller's transaction; return the changes that took effect.

    Each job's current state is read (FOR UPDATE on servers) and must equal `from_state`: with strict, a
    mismatch is an IllegalTransition; otherwise that change is skipped (someone else moved the job first, which
    is normal for recovery races). Then follow-ups: children whose parents all finished become READY (and
    fast-forward), children of FAILED or USER_KILLED parents fail with the reason.
    """
    if not changes:
        return []
    actor = actor or default_actor()
    now = time.time()
    for c in changes:
        check_path(c.from_state, c.path())
    current = states_of(conn, sorted({c.job_id for c in changes}), lock=lock)
    done: list[Change] = []
    for c in changes:
        cur = current.get(c.job_id)
        if cur == c.from_state:
            done.append(c)
            current[c.job_id] = c.to_state  # a second change of the same job in one batch chains
        elif strict:
            if cur is None:
                raise UserError(f"job {c.job_id} does not exist")
            raise IllegalTransition(f"job {c.job_id} is {cur}, not {c.from_state}; nothing was changed")
    _write(conn, done, actor, now)
    _follow_ups(conn, done, actor)
    return done


def _write(conn: Connection, done: Sequence[Change], actor: str, now: float) -> None:
    """One UPDATE per kind of change. A job changed twice in one batch (started, then finished) is merged
    into one change through the intermediate states (one row write, every step still an event); changes that
    cannot merge go in successive waves, so the later one is written last."""
    merged = _merge(done)
    waves: list[dict[tuple[Any, ...], list[int]]] = []
    nth: dict[int, int] = {}
    for c in merged:
        k = nth.get(c.job_id, 0)
        nth[c.job_id] = k + 1
        if k == len(waves):
            waves.append(defaultdict(list))
        key = (c.to_state, c.message, _spends_retry(c), tuple(sorted(c.fields.items())))
        waves[k][key].append(c.job_id)
    for groups in waves:
        _update(conn, groups, now)
    rows = [(r["job_id"], r["from_state"], r["to_state"], r["timestamp"], r["actor"], r["message"],
             None if r["data"] is None else json.dumps(r["data"]))
            for c in merged for r in event_rows(c, actor, now)]
    db.bulk_insert(conn, "events", EVENT_COLUMNS, rows)  # the driver's executemany: the launcher's hot path


def _merge(done: Sequence[Change]) -> list[Change]:
    """Fold a job's change that carries no message or data into the job's next change in the same batch."""
    if len({c.job_id for c in done}) == len(done):
        return list(done)  # one change per job: nothing to fold (big user batches)
    last: dict[int, int] = {}
    out: list[Change | None] = []
    for c in done:
        i = last.get(c.job_id)
        prev = out[i] if i is not None else None
        if prev is not None and prev.message is None and prev.data is None and prev.to_state == c.from_state:
            t_prev = prev.at if prev.at is not None else time.time()
            c = Change(c.job_id, prev.from_state, c.to_state, c.message, c.data,
                       via=(*prev.via, prev.to_state, *c.via), at=c.at,
                       via_at=(*(prev.via_at or (t_prev,) * len(prev.via)), t_prev,
                               *(c.via_at or ((c.at if c.at is not None else time.time()),) * len(c.via))),
                       fields={**prev.fields, **c.fields})
            out[i] = None  # type: ignore[index]
        last[c.job_id] = len(out)
        out.append(c)
    return [c for c in out if c is not None]


def _spends_retry(c: Change) -> bool:
    prev: str = c.from_state
    for st in c.path():
        if st == S.RESTART_READY and prev in RETRY_SOURCES:
            return True
        prev = st
    return False


EVENT_COLUMNS = ["job_id", "from_state", "to_state", "timestamp", "actor", "message", "data"]


def _update(conn: Connection, groups: dict[tuple[Any, ...], list[int]], now: float) -> None:
    """Plain SQL through the driver: SQLAlchemy's per-statement compile of IN lists cost more than the write."""
    m = db.marks(conn, 1)
    for (to, msg, retry, fields), gids in groups.items():
        sets = [f"state = {m}", f"state_message = {m}", f"updated_at = {m}"] + [f"{k} = {m}" for k, _ in fields]
        if retry:
            sets.append("retry_count = retry_count + 1")
        head = f"UPDATE jobs SET {', '.join(sets)} WHERE id IN "
        args = [to, msg, now, *(v for _, v in fields)]
        for i in range(0, len(gids), 900):
            chunk = gids[i : i + 900]
            db.raw(conn, f"{head}({db.marks(conn, len(chunk))})", [*args, *chunk], fetch=False)


def _follow_ups(conn: Connection, done: Sequence[Change], actor: str) -> None:
    finished = [c.job_id for c in done if c.to_state == S.JOB_FINISHED]
    dead = [c.job_id for c in done if c.to_state in (S.FAILED, S.USER_KILLED)]
    if finished:
        release_children(conn, finished, actor)
    if dead:
        fail_children(conn, dead, actor)


def states_of(conn: Connection, ids: Sequence[int], *, lock: bool = False) -> dict[int, str]:
    """Current states of these jobs (locked FOR UPDATE on the servers when asked)."""
    tail = " FOR UPDATE" if lock and conn.dialect.name != "sqlite" else ""
    return {int(i): st for i, st in db.raw_in(conn, "SELECT id, state FROM jobs WHERE id IN", ids, tail)}


def children_of(conn: Connection, parent_ids: Sequence[int]) -> list[int]:
    rows = db.raw_in(conn, "SELECT child_id FROM job_parents WHERE parent_id IN", parent_ids)
    return sorted({int(r[0]) for r in rows})


def release_children(conn: Connection, parent_ids: Sequence[int], actor: str) -> list[int]:
    """Children in AWAITING_PARENTS whose parents have all finished move on: READY, and further if they can."""
    from sluice.models import apps  # local: only needed here, keeps the import graph flat

    kids = children_of(conn, parent_ids)
    if not kids:
        return []
    p = jobs.alias("p")
    unfinished = exists().where(and_(job_parents.c.child_id == jobs.c.id, p.c.id == job_parents.c.parent_id,
                                     p.c.state != S.JOB_FINISHED))
    changes = []
    for i in range(0, len(kids), 900):
        q = (select(jobs.c.id, jobs.c.stage_in, apps.c.preprocess)
             .join(apps, apps.c.id == jobs.c.app_id)
             .where(jobs.c.id.in_(kids[i : i + 900]), jobs.c.state == S.AWAITING_PARENTS, ~unfinished))
        for r in conn.execute(q):
            path = ready_path(bool(r.stage_in), bool(r.preprocess))
            changes.append(Change(r.id, S.AWAITING_PARENTS, path[-1], via=path[:-1]))
    return [c.job_id for c in apply(conn, changes, actor, strict=False)]


def fail_children(conn: Connection, parent_ids: Sequence[int], actor: str) -> None:
    """Children still waiting on a FAILED or USER_KILLED parent will never run: they fail, saying why."""
    kids = children_of(conn, parent_ids)
    if not kids:
        return
    pj = jobs.alias("pj")
    changes = []
    for i in range(0, len(kids), 900):
        q = (select(jobs.c.id, jobs.c.state, pj.c.id.label("pid"), pj.c.state.label("pstate"))
             .join(job_parents, job_parents.c.child_id == jobs.c.id)
             .join(pj, pj.c.id == job_parents.c.parent_id)
             .where(jobs.c.id.in_(kids[i : i + 900]), jobs.c.state.in_(list(WAITING)),
                    pj.c.state.in_([S.FAILED, S.USER_KILLED])))
        seen: set[int] = set()
        for r in conn.execute(q):
            if r.id in seen:
                continue
            seen.add(r.id)
            msg = f"parent {r.pid} ended {r.pstate}"
            if r.state == S.CREATED:
                changes.append(Change(r.id, S.CREATED, S.FAILED, msg, via=(S.AWAITING_PARENTS,)))
            else:
                changes.append(Change(r.id, r.state, S.FAILED, msg))
    apply(conn, changes, actor, strict=False)
