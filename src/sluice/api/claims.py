"""Claiming work atomically: one statement per batch, so two launchers never take the same job.

A claim sets `jobs.session_id` (the lock); the state changes only when the job really starts. PostgreSQL and
MariaDB select with FOR UPDATE SKIP LOCKED (concurrent launchers skip each other's rows instead of waiting);
SQLite holds the database write lock for the transaction (BEGIN IMMEDIATE). These are the launcher's hot
path: rows come back through the driver, since per-row ORM-style processing was most of a claim's cost.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, Dialect, and_, or_

from sluice.schema import JOB_NAMES, JSON_EMPTY, JSON_FIELDS, URGENT_SQL, JobRow
from sluice.states import RUNNABLE, S
from sluice.store import db
from sluice.store.models import CLAIMABLE, claimable_sql, jobs

if TYPE_CHECKING:
    from sluice.api.base import WorkspaceBase


@dataclass(frozen=True)
class Selection:
    """Which jobs this launcher may run: workflows, tags, pins, and what fits the allocation."""

    workflows: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    max_nodes: int = 1
    max_cores: int = 1 << 30
    max_gpus: int = 1 << 30
    serial_only: bool = True
    queue: str | None = None
    machine: str | None = None
    any_job: bool = False
    """Every job whatever its size and pins: the service's stage-in on the login node."""

    def where(self) -> ColumnElement[bool]:
        c = jobs.c
        if self.any_job:
            return and_(True)
        conds: list[ColumnElement[bool]] = [c.num_nodes <= self.max_nodes,
                                            c.ranks_per_node * c.threads_per_rank <= self.max_cores,
                                            c.gpus_per_rank * c.ranks_per_node <= self.max_gpus]
        if self.serial_only:
            conds.append(c.num_nodes == 1)
        if self.workflows:
            conds.append(c.workflow.in_(self.workflows))
        for k, v in self.tags:
            conds.append(c.tags[k].as_string() == v)
        conds.append(or_(c.queue.is_(None), c.queue == self.queue) if self.queue else c.queue.is_(None))
        conds.append(or_(c.machine.is_(None), c.machine == self.machine) if self.machine else c.machine.is_(None))
        return and_(*conds)


@dataclass(kw_only=True)
class Claimed(JobRow):
    """A claimed job with what the runner needs to start it: its row, and its app joined in."""

    app_name: str
    command: str
    shell: bool = False
    app_env: dict[str, str] = field(default_factory=dict)
    postprocess: str | None = None
    error_handler: str | None = None
    timeout_handler: str | None = None
    on_error: str = "retry"
    on_timeout: str = "retry"
    preamble: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_APP_COLS = ("id", "name", "command", "shell", "environment", "postprocess", "error_handler", "timeout_handler",
             "on_error", "on_timeout", "preamble", "machines")
_JSON_AT = [(i, n, JSON_EMPTY.get(n)) for i, n in enumerate(JOB_NAMES) if n in JSON_FIELDS]
_APP_AT = JOB_NAMES.index("app_id")
_JOB_COLS = ", ".join(JOB_NAMES)


def _json(v: Any, empty: Any) -> Any:
    if v is None:
        return empty() if empty is not None else None
    return json.loads(v) if isinstance(v, str | bytes) else v  # psycopg decodes JSON itself


class _Turns:
    """A lock taken in the order it was asked for: a thread that lets go and asks again at once (the writer,
    batch after batch) must not keep it from one already waiting (the claiming thread), as a plain Lock may."""

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._next = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._cv:
            turn = self._next
            self._next += 1
            while turn != self._serving:
                self._cv.wait()

    def __exit__(self, *_exc: object) -> None:
        with self._cv:
            self._serving += 1
            self._cv.notify_all()


_TURNS: dict[int, _Turns] = {}
_TURNS_LOCK = threading.Lock()


@contextmanager
def hot_write(ws: WorkspaceBase) -> Iterator[Connection]:
    """A write transaction for the launcher's hot path: on SQLite, one thread of this process at a time, in turn.

    Why: a launcher's claiming thread and its writer both write all the time, and SQLite lets one in; the
    other waited in SQLite's busy handler, which sleeps 1, 2, 5 ... up to 100 ms between tries, and so often
    slept on long after the lock was free. Turns of this process hand over at once; other processes still
    meet the busy handler.

    On PostgreSQL the transaction reads through indexes only: every statement here picks rows by id or by an
    index, yet with 10,000 jobs and no statistics yet the planner scanned the whole table for each writer batch
    of ~60 ids (`id IN (...)`), a fifth of the server's time per job.
    """
    if ws.engine.dialect.name != "sqlite":
        with ws.write() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            yield conn
        return
    key = id(ws.engine)
    turns = _TURNS.get(key)
    if turns is None:
        with _TURNS_LOCK:
            turns = _TURNS.setdefault(key, _Turns())
    with turns, ws.write() as conn:
        if not conn.info.get("sluice_hot"):
            for pragma in _HOT_PRAGMAS:
                conn.exec_driver_sql(pragma)
            conn.info["sluice_hot"] = True
        yield conn


_HOT_PRAGMAS = ("PRAGMA cache_size = -65536", "PRAGMA mmap_size = 268435456")
"""For the launcher's writing connections on SQLite: a 64 MiB page cache (the default is 2 MiB) and reads
through a 256 MiB map. At a million jobs the B-tree pages of a claim or a batch of changes were mostly not in the
cache, each a pread from the kernel: 25-35% of the launcher's CPU was system time, and jobs/s rose by 10-25%
with both (interleaved runs, 200,000 simulated jobs)."""


def in_order(conn: Connection) -> None:
    """On PostgreSQL, for the rest of this transaction: read the index in id order and stop at the LIMIT.

    Why: the selection's conditions (num_nodes <= 1 AND num_nodes = 1 AND ...) multiply into an estimate of a
    thousand matching rows where there are a million, so the planner collected them all through a bitmap and
    sorted them for each claim (57 ms with 50,000 runnable jobs, growing with them)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; "
                             "SET LOCAL enable_seqscan = off")


def claim(ws: WorkspaceBase, session_id: int, sel: Selection, limit: int, *, max_wall_min: float | None = None,
          states: frozenset[str] = RUNNABLE, after: Mapping[str, int] | None = None) -> list[Claimed]:
    """Take up to `limit` unowned jobs in `states` matching `sel`: urgent ones first (priority, then the nearest
    deadline), then the lowest ids (adjacent rows are cheap to write back). Jobs whose wall time exceeds
    `max_wall_min` (what is left of the allocation) are left. The result is in that order.

    `after` (state -> id) is where the caller's last claim of each state ended: the scan starts above it, so it
    does not walk again over the jobs it claimed and has not started yet (tens of thousands on a big
    allocation, each a row to read and skip); when too few lie above, it goes on from the lowest ids again, so
    no job is ever out of reach."""
    with hot_write(ws) as conn:
        # PostgreSQL hands back the rows it takes (UPDATE ... RETURNING): no second statement to read them
        taken: list[tuple[Any, ...]] | None = [] if conn.dialect.name == "postgresql" else None
        ids = _own(conn, session_id, _ids(conn, urgent_sql(conn, sel, states, limit, max_wall_min)), taken)
        if len(ids) < limit:  # then the rest in id order, one state at a time through the (state, id) index
            in_order(conn)
            rest: list[int] = []
            for st in sorted(states):
                start = (after or {}).get(st, 0)
                got = _ids(conn, state_sql(conn, sel, st, limit - len(ids), max_wall_min, after=start), in_one=True)
                if len(got) < limit - len(ids) and start > 0:
                    got += _ids(conn, state_sql(conn, sel, st, limit - len(ids) - len(got), max_wall_min,
                                                after=0, upto=start), in_one=True)
                rest += got
            if len(states) > 1:
                rest = sorted(rest)[: limit - len(ids)]  # the lowest of all (the others' locks go at commit)
            ids += _own(conn, session_id, rest, taken)
        if not ids:
            return []
        rows = taken if taken is not None else rows_in(conn, _JOB_COLS, "jobs", ids)
        app_ids = sorted({r[_APP_AT] for r in rows})
        app_rows = db.raw_in(conn, f"SELECT {', '.join(_APP_COLS)} FROM apps WHERE id IN", app_ids,
                             chunk=room(conn))
    order = {jid: i for i, jid in enumerate(ids)}
    rows.sort(key=lambda r: order[r[0]])  # the most urgent first, then adjacent ids
    by_app = {a[0]: _app_fields(_on_machine(a, sel.machine)) for a in app_rows}
    out = []
    new = object.__new__
    for r in rows:
        vals = list(r)
        for i, _n, empty in _JSON_AT:
            v = vals[i]
            if v is None or v.__class__ is str:  # JSON as its text on every backend (db.raw's json_text)
                fast = _JSON_FAST.get(v)  # most are {} / [] / null: no decode
                vals[i] = fast() if fast is not None else (json.loads(v) if v is not None else
                                                           (empty() if empty is not None else None))
            elif isinstance(v, bytes):
                vals[i] = json.loads(v)
        d = dict(zip(JOB_NAMES, vals, strict=True))
        d.update(by_app[d["app_id"]])
        d["extra"] = {}
        c = new(Claimed)  # every field is in d: the dataclass __init__ of ~40 keywords cost more than the claim
        c.__dict__ = d
        out.append(c)
    return out


_JSON_FAST: dict[str | None, Any] = {"{}": dict, "[]": list, "null": lambda: None}


def _app_fields(a: tuple[Any, ...]) -> dict[str, Any]:
    """The Claimed fields an app row gives (every field of Claimed beyond JobRow's, but `extra`)."""
    return {"app_name": a[1], "command": a[2], "shell": bool(a[3]), "app_env": a[4], "postprocess": a[5],
            "error_handler": a[6], "timeout_handler": a[7], "on_error": a[8], "on_timeout": a[9],
            "preamble": a[10]}


def _on_machine(a: tuple[Any, ...], machine: str | None) -> tuple[Any, ...]:
    """An app row with its override for this machine applied (command, preamble, environment)."""
    row = list(a)
    row[4] = _json(row[4], dict)
    over = (_json(row[11], dict) or {}).get(machine) if machine else None
    if over:
        row[2] = over.get("command") or row[2]
        row[10] = over.get("preamble", row[10])
        row[4] = {**row[4], **(over.get("environment") or {})}
    return tuple(row)


def _own(conn: Connection, session_id: int, ids: list[int], taken: list[tuple[Any, ...]] | None = None) -> list[int]:
    """Set the jobs' session_id (the claim itself); with `taken`, add the rows as they now are to it."""
    if ids:
        rows = db.raw_in(conn, f"UPDATE jobs SET session_id = {db.marks(conn, 1)} WHERE id IN", ids,
                         f" RETURNING {_JOB_COLS}" if taken is not None else "", args=[session_id],
                         fetch=taken is not None, chunk=room(conn), json_text=True)
        if taken is not None:
            taken += rows
    return ids


def room(conn: Connection) -> int:
    """Values one statement may bind on this connection. SQLite allows 32,766 since 3.32, 999 before (some
    clusters still have it): the launcher's writes in chunks of 900 ids were ~90 statements for 5,000 changes,
    and each statement's return waited for the GIL (up to 5 ms while the main loop runs), so a transaction of
    60 ms took 800 ms under load, holding the write lock all along."""
    if conn.dialect.name != "sqlite":
        return 20_000
    try:
        n = int(conn.connection.driver_connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))  # type: ignore
    except (AttributeError, sqlite3.Error):
        n = 999
    return max(100, min(n, 32_766) - 16)


def _ids(conn: Connection, sql: str, *, in_one: bool = False) -> list[int]:
    """The ids `sql` selects; `in_one` (SQLite): as one JSON array, sorted."""
    if in_one and conn.dialect.name == "sqlite":
        return sorted(json.loads(db.raw(conn, f"SELECT json_group_array(id) FROM ({sql})")[0][0]))
    return [int(r[0]) for r in db.raw(conn, sql)]


def rows_in(conn: Connection, cols: str, table: str, ids: list[int]) -> list[tuple[Any, ...]]:
    """`SELECT cols FROM table WHERE id IN ids`, through the driver, in as few statements as the driver takes.

    On SQLite the rows come back as one JSON array per statement: sqlite3 lets go of the GIL for each row it
    steps, and while the main loop computes, each row then waited for the GIL (up to the 5 ms switch interval):
    a claim of 3,300 jobs took 250-500 ms under load, a tenth of that alone. Numbers come back as SQLite's
    JSON prints them (15 significant digits: ~10 us on a timestamp); JSON columns as their text, on every backend
    (psycopg decoded them: a job whose `data` was the JSON string "[1]" was claimed with the list [1], and "x"
    failed the claim; and the text of {} and [], which most are, needs no decoding)."""
    if conn.dialect.name != "sqlite":
        return db.raw_in(conn, f"SELECT {cols} FROM {table} WHERE id IN", ids, chunk=room(conn), json_text=True)
    out: list[tuple[Any, ...]] = []
    step = room(conn)
    for i in range(0, len(ids), step):
        part = ids[i : i + step]
        got = db.raw(conn, f"SELECT json_group_array(json_array({cols})) FROM {table} WHERE id IN "
                           f"({db.marks(conn, len(part))})", part)[0][0]
        out += map(tuple, json.loads(got))
    return out


_HINT = {"sqlite": (" INDEXED BY ix_jobs_urgent", " INDEXED BY ix_jobs_state_id", " INDEXED BY ix_jobs_claim_")}
"""SQLite's planner, after ANALYZE (which PRAGMA optimize runs too) on a million jobs, once chose a full scan of
`jobs` for the claim (0.2 s a claim): the index is named, so no statistics can change the plan."""


def state_hint(conn: Connection) -> str:
    """What names ix_jobs_state_id (state, id) for this dialect's planner ("" where none is needed)."""
    return _HINT.get(conn.dialect.name, ("", "", ""))[1]


_PARTIAL = ("sqlite", "postgresql")
"""Where the ix_jobs_claim_<state> indexes exist (store/models.py): runnable states are claimed through them."""


@functools.lru_cache(maxsize=256)
def sel_sql(dialect: Dialect, sel: Selection) -> str:
    """The selection's conditions as SQL for this dialect, values inlined (escaped by SQLAlchemy, with %
    doubled where the driver reads placeholders)."""
    return str(sel.where().compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _tail(conn: Connection, sel: Selection, max_wall_min: float | None, unowned: str = "session_id IS NULL") -> str:
    wall = "" if max_wall_min is None else \
        f" AND (wall_time_min IS NULL OR wall_time_min <= {float(max_wall_min)!r})"
    return f" AND {unowned} AND {sel_sql(conn.dialect, sel)}{wall}"


def urgent_sql(conn: Connection, sel: Selection, states: frozenset[str], n: int,
               max_wall_min: float | None = None) -> str:
    """The claim's first query: urgent jobs (a priority or a deadline), through the partial ix_jobs_urgent.

    On PostgreSQL without statistics (a campaign's first minute, before autovacuum's ANALYZE) the planner
    estimated one row for every index and took ix_jobs_work, whose predicate `session_id IS NULL AND state IN
    (...)` the query implies: it walked every runnable job to find no urgent one, 100 ms a claim with 200,000
    jobs. Spelt `COALESCE(session_id, 0) = 0` (session ids start at 1), that index no longer applies."""
    hint = _HINT.get(conn.dialect.name, ("", "", ""))[0]
    lock = "" if conn.dialect.name == "sqlite" else " FOR UPDATE SKIP LOCKED"
    names = ", ".join(f"'{S(st).value}'" for st in sorted(states))
    # on PostgreSQL the same test, in words the planner cannot match to ix_jobs_work's predicate
    unowned = "COALESCE(session_id, 0) = 0" if conn.dialect.name == "postgresql" else "session_id IS NULL"
    return (f"SELECT id FROM jobs{hint} WHERE state IN ({names}){_tail(conn, sel, max_wall_min, unowned)} "
            f"AND ({URGENT_SQL}) "
            f"ORDER BY priority DESC, deadline IS NULL, deadline, id LIMIT {int(n)}{lock}")


def state_sql(conn: Connection, sel: Selection, state: str, n: int, max_wall_min: float | None = None, *,
              after: int = 0, upto: int | None = None, lock: bool = True) -> str:
    """The claim's query for one state: the lowest ids above `after` (to `upto`), through ix_jobs_claim_<state> for
    a runnable state (on MariaDB, and for other states, ix_jobs_state_id). One state per query: `state IN (...)
    ORDER BY id` cannot read an index in id order, and made SQLite sort."""
    name, st = conn.dialect.name, S(state).value
    partial = st in CLAIMABLE and name in _PARTIAL
    hint = _HINT.get(name, ("", "", ""))[2 if partial else 1] + (st.lower() if partial and name == "sqlite" else "")
    rows_lock = " FOR UPDATE SKIP LOCKED" if lock and name != "sqlite" else ""
    span = f" AND id > {int(after)}" + ("" if upto is None else f" AND id <= {int(upto)}")
    only = f" AND {claimable_sql(st)}" if partial else ""  # its predicate, word for word: SQLite needs to see it
    return (f"SELECT id FROM jobs{hint} WHERE state = '{st}'{span}{_tail(conn, sel, max_wall_min)}"
            f"{only} ORDER BY id LIMIT {int(n)}{rows_lock}")


def unclaim(ws: WorkspaceBase, session_id: int, ids: list[int]) -> None:
    """Give back claimed jobs that were never started."""
    if ids:
        with hot_write(ws) as conn:
            unclaim_in(conn, session_id, ids)


def unclaim_in(conn: Connection, session_id: int, ids: list[int]) -> None:
    """unclaim() in the caller's transaction, through the driver: a launcher that stops may hold a claimed
    buffer as large as its allocation, and 65,536 ids compiled by SQLAlchemy in chunks were ~75 statements."""
    m = db.marks(conn, 1)
    db.raw_in(conn, f"UPDATE jobs SET session_id = NULL WHERE session_id = {m} AND state <> {m} AND id IN", ids,
              chunk=room(conn), args=[session_id, S.RUNNING.value], fetch=False)
