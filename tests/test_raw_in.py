"""db.raw_in, the launcher's way of naming many jobs in one statement: every id is found, in every chunk.

SQLite and MariaDB take a mark per id, in chunks of `chunk`; PostgreSQL takes one array per ARRAY_CHUNK ids.
Both limits are lowered here so that 25 ids cross several chunks."""

from __future__ import annotations

import pytest

from sluice.api import Workspace
from sluice.store import db


def test_ids_across_chunks_are_all_read_and_written(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws.add_app("a", "run")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(30)])
    monkeypatch.setattr(db, "ARRAY_CHUNK", 4)
    some = ids[2:27]
    with db.write(ws.engine) as conn:
        m = db.marks(conn, 1)
        db.raw_in(conn, f"UPDATE jobs SET state_message = {m} WHERE id IN", some, args=["seen"], chunk=4,
                  fetch=False)
        rows = db.raw_in(conn, f"SELECT id FROM jobs WHERE state_message = {m} AND id IN", [*some, 10**12],
                         args=["seen"], chunk=4)
    assert sorted(r[0] for r in rows) == some
    assert {j.id for j in ws.jobs() if j.state_message == "seen"} == set(some)
    with db.read(ws.engine) as conn:
        assert db.raw_in(conn, "SELECT id FROM jobs WHERE id IN", []) == []
