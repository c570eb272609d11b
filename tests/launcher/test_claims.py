"""Claims take the lowest runnable ids in one write, on every backend, however large the batch."""

from __future__ import annotations

import sqlite3

from sluice import db
from sluice.api import Workspace
from sluice.launcher import claims, sessions
from sluice.launcher.claims import Selection


def test_a_claim_larger_than_sqlites_old_variable_limit_takes_the_lowest_ids(ws: Workspace) -> None:
    ws.add_app("noop", "/bin/true")
    ids = ws.add_jobs([{"name": f"t{i}", "app": "noop"} for i in range(2500)])
    with db.write(ws.engine) as conn:
        sid = sessions.start(conn, job_mode="serial")
    sel = Selection()
    with db.write(ws.engine) as conn:
        raw = conn.connection.driver_connection
        if isinstance(raw, sqlite3.Connection):  # as SQLite before 3.32 (still on some clusters)
            raw.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        first = claims.claim(conn, sid, sel, 2000)
    with db.write(ws.engine) as conn:
        rest = claims.claim(conn, sid, sel, 2000)
    with db.write(ws.engine) as conn:
        none = claims.claim(conn, sid, sel, 2000)
    assert [c.id for c in first] == sorted(ids)[:2000]  # in id order across the 900-id chunks
    assert [c.id for c in rest] == sorted(ids)[2000:]
    assert none == []
    assert all(c.app_name == "noop" and c.command == "/bin/true" for c in first + rest)
    assert {j.session_id for j in ws.jobs()} == {sid}
