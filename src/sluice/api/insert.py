"""Bulk inserts of new jobs and their creation events: 100,000 jobs in about two seconds on SQLite.

Rows go to the driver directly (executemany, or COPY on PostgreSQL) with explicit ids, JSON serialised once
here; creation events are written by the database itself from the new rows whenever it can.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Double, String, insert, literal, select

from sluice.states import S, ready_path
from sluice.store import db
from sluice.store.models import events, jobs

JOB_INSERT_COLUMNS = [c.name for c in jobs.c]
EVENT_INSERT_COLUMNS = ["job_id", "from_state", "to_state", "timestamp", "actor", "message"]
_JSON_INDEXES = [i for i, c in enumerate(jobs.c) if isinstance(c.type, JSON)]
_ID_INDEX = JOB_INSERT_COLUMNS.index("id")
_row_values = operator.itemgetter(*(c for c in JOB_INSERT_COLUMNS if c != "id"))
try:  # json.dumps builds a fresh C encoder per call; one prebuilt (no circularity check) halves the cost
    from json.encoder import c_encode_basestring_ascii, c_make_encoder  # type: ignore[attr-defined]

    _c_encoder = c_make_encoder(None, json.JSONEncoder().default, c_encode_basestring_ascii, None, ": ", ", ",
                                False, False, True) if c_make_encoder and c_encode_basestring_ascii else None
except ImportError:  # pragma: no cover - CPython always has the C accelerator
    _c_encoder = None


def dumps(v: Any) -> str:
    """json.dumps(v), faster; anything unusual (or an error) goes through json.dumps for its exact message."""
    if _c_encoder is not None:
        try:
            return "".join(_c_encoder(v, 0))
        except (RecursionError, ValueError, TypeError):
            pass
    return json.dumps(v)


def _job_tuple(jid: int, row: dict[str, Any]) -> tuple[Any, ...]:
    """A jobs row as the driver wants it: explicit id, JSON columns serialised once here."""
    vals = list(_row_values(row))
    vals.insert(_ID_INDEX, jid)
    for i in _JSON_INDEXES:
        v = vals[i]
        if v is not None:
            vals[i] = dumps(v)
    return tuple(vals)


def insert_jobs(conn: Connection, rows: Sequence[dict[str, Any]], parent_lists: Sequence[list[int]],
                pstate: Mapping[int, str], app_rows: Mapping[str, dict[str, Any]], now: float,
                actor: str) -> list[int]:
    """Write validated rows (specs.job_row) with their edges and creation events; returns the new ids.

    Each job's first state follows from its parents (all finished or none: on to READY and as far as it can
    go by itself; else AWAITING_PARENTS), its stage-in and its app's preprocess.
    """
    ready = {a: ready_path(False, bool(r.get("preprocess"))) for a, r in app_rows.items()}
    waiting: tuple[str, ...] = (S.AWAITING_PARENTS,)
    paths = []
    for row, parents in zip(rows, parent_lists, strict=True):
        if parents and any(pstate[p] != S.JOB_FINISHED for p in parents):
            path = waiting
        elif row["stage_in"]:
            path = (S.READY,)
        else:
            path = ready[row["_app"]]
        row["state"] = path[-1]
        paths.append(path)
    ids = db.allocate_ids(conn, "jobs", len(rows))
    db.bulk_insert(conn, "jobs", JOB_INSERT_COLUMNS, [_job_tuple(jid, row) for jid, row in zip(ids, rows, strict=True)])
    _insert_events(conn, ids, paths, now, actor)
    db.bulk_insert(conn, "job_parents", ["parent_id", "child_id"],
                   [(p, jid) for jid, ps in zip(ids, parent_lists, strict=True) for p in ps])
    return ids


def _insert_events(conn: Connection, ids: Sequence[int], paths: Sequence[tuple[str, ...]], now: float,
                   actor: str) -> None:
    """The creation events of new jobs: one per step of each job's path from CREATED (the first says "created").

    The path is a function of the job's final state (ready_path never skips a step), so when the new ids are
    one contiguous range -- always on SQLite and MariaDB (allocate_ids holds the write lock), almost always on
    PostgreSQL -- the database writes them itself: one INSERT ... SELECT from the new jobs rows per step, no
    row crossing the driver. Each job's events still get increasing ids, so its history reads in order.
    Otherwise (scattered ids) the rows go through executemany.
    """
    if not ids:
        return
    lo, hi = ids[0], ids[-1]
    if hi - lo + 1 != len(ids):
        evs: list[tuple[Any, ...]] = []
        for jid, path in zip(ids, paths, strict=True):
            prev = S.CREATED.value
            for i, st in enumerate(path):
                evs.append((jid, prev, st, now, actor, "created" if i == 0 else None))
                prev = st
        db.bulk_insert(conn, "events", EVENT_INSERT_COLUMNS, evs)
        return
    by_final = {p[-1]: p for p in set(paths)}
    steps: dict[tuple[str, str, int], list[str]] = {}  # (from, to, step) -> final states whose path has it
    for final, path in by_final.items():
        prev = S.CREATED.value
        for i, st in enumerate(path):
            steps.setdefault((prev, st, i), []).append(final)
            prev = st
    sel = select(jobs.c.id).where(jobs.c.id >= lo, jobs.c.id <= hi)
    for (frm, to, i), finals in sorted(steps.items(), key=lambda kv: kv[0][2]):
        q = sel if len(finals) == len(by_final) else sel.where(jobs.c.state.in_(sorted(finals)))
        cols = q.with_only_columns(jobs.c.id, literal(frm, String()), literal(to, String()), literal(now, Double()),
                                   literal(actor, String()), literal("created" if i == 0 else None, String()))
        conn.execute(insert(events).from_select(EVENT_INSERT_COLUMNS, cols))
