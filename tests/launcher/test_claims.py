"""Claims take the lowest runnable ids in one write, on every backend, however large the batch."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, text

from sluice.api import Workspace, claims, sessions
from sluice.api.claims import Selection


@contextmanager
def old_sqlite_limit(ws: Workspace) -> Iterator[None]:
    """Within the block, every SQLite connection binds at most 999 values a statement, as SQLite before 3.32
    (still on some clusters); other backends are left as they are."""

    def old_limit(dbapi: Any, _record: Any) -> None:
        if isinstance(dbapi, sqlite3.Connection):
            dbapi.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    event.listen(ws.engine, "connect", old_limit)
    ws.engine.dispose()  # every connection from here on has the limit
    try:
        yield
    finally:
        event.remove(ws.engine, "connect", old_limit)
        ws.engine.dispose()


def test_a_claim_larger_than_sqlites_old_variable_limit_takes_the_lowest_ids(ws: Workspace) -> None:
    ws.add_app("noop", "/bin/true")
    ids = ws.add_jobs([{"name": f"t{i}", "app": "noop"} for i in range(2500)])
    sid = sessions.start(ws, job_mode="serial")
    sel = Selection()
    with old_sqlite_limit(ws):
        first = claims.claim(ws, sid, sel, 2000)
        rest = claims.claim(ws, sid, sel, 2000)
        none = claims.claim(ws, sid, sel, 2000)
    assert [c.id for c in first] == sorted(ids)[:2000]  # in id order across the 900-id chunks
    assert [c.id for c in rest] == sorted(ids)[2000:]
    assert none == []
    assert all(c.app_name == "noop" and c.command == "/bin/true" for c in first + rest)
    assert {j.session_id for j in ws.jobs()} == {sid}


def test_a_claimed_job_carries_every_field_of_its_row(ws: Workspace) -> None:
    """The launcher's record is the job's own row (schema.JobRow) with its app joined: nothing is dropped."""
    ws.add_app("sim", "sim {x}", environment={"A": "1"}, postprocess="true")
    job = ws.add_job("j", app="sim", params={"x": 1}, tags={"k": "v"}, data={"d": [1]}, stage_out=["out"],
                     environment={"B": "2"}, wall_time_min=5)
    sid = sessions.start(ws, job_mode="serial")
    (c,) = claims.claim(ws, sid, Selection(), 10)
    row = ws.job(job.id)
    for f in ("id", "name", "workflow", "params", "tags", "data", "stage_out", "environment", "wall_time_min",
              "max_retries", "retry_count"):
        assert getattr(c, f) == getattr(row, f), f
    assert (c.app_name, c.app_env, c.postprocess) == ("sim", {"A": "1"}, "true")


def test_a_claimed_jobs_json_fields_are_what_was_stored_whatever_their_kind(ws: Workspace) -> None:
    """`data` may be any JSON value. On PostgreSQL the claim once decoded what psycopg had decoded already: a
    string "[1]" came back as the list [1], and "hello" made the claim fail."""
    ws.add_app("noop", "/bin/true")
    values: list[Any] = ["hello", "[1]", "{}", 5, 2.5, True, None, [1, "a"], {"k": {"n": [None]}}, {}, []]
    ids = ws.add_jobs([{"name": f"j{i}", "app": "noop", "data": v} for i, v in enumerate(values)])
    sid = sessions.start(ws, job_mode="serial")
    got = {c.id: c for c in claims.claim(ws, sid, Selection(), 100)}
    assert [got[i].data for i in ids] == values
    assert [type(got[i].data) for i in ids] == [type(v) for v in values]
    assert [ws.job(i).data for i in ids] == values


def test_giving_back_claims_frees_only_this_sessions_jobs_that_never_started(ws: Workspace) -> None:
    """A stopping launcher gives back its claimed buffer (as large as its allocation, in statements of as
    many ids as the driver takes); its running jobs and another launcher's claims stay where they are."""
    ws.add_app("noop", "/bin/true")
    ws.add_jobs([{"name": f"t{i}", "app": "noop"} for i in range(2500)])
    mine, other = sessions.start(ws, job_mode="serial"), sessions.start(ws, job_mode="serial")
    with old_sqlite_limit(ws):  # 999 marks a statement: the ids go in three
        held = [c.id for c in claims.claim(ws, mine, Selection(), 2400)]
        theirs = [c.id for c in claims.claim(ws, other, Selection(), 100)]
        running = held[:3]
        with ws.engine.begin() as c:
            c.execute(text("UPDATE jobs SET state = 'RUNNING' WHERE id IN (:a, :b, :c)"),
                      dict(zip("abc", running, strict=True)))
        claims.unclaim(ws, mine, held + theirs)
    owner = {j.id: j.session_id for j in ws.jobs()}
    assert {owner[i] for i in held[3:]} == {None}
    assert [owner[i] for i in running] == [mine] * 3
    assert {owner[i] for i in theirs} == {other}
