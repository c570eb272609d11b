"""On PostgreSQL the launcher's hot path reads through its indexes before any statistics exist.

A campaign's first minute, before autovacuum's ANALYZE, is when the planner knows least: it guessed from the
table's size alone, scanned all of `jobs` for each writer batch of a few dozen ids, and answered the claim's
urgent-first query by walking every runnable job through ix_jobs_work. Each test turns autovacuum off for
`jobs`, so no statistics arrive while it runs.
"""

from __future__ import annotations

from typing import Any

import pytest

from sluice.api import Workspace, claims, lookups, sessions
from sluice.api.claims import Selection
from sluice.api.transitions import apply
from sluice.states import RUNNABLE, Change, S

SEL = Selection(max_cores=64)


@pytest.fixture
def pg_ws(tmp_path: Any, request: pytest.FixtureRequest) -> Workspace:
    from tests.conftest import make_workspace

    ws = make_workspace("postgresql", tmp_path / "ws", request)
    with ws.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE jobs SET (autovacuum_enabled = off)")
    ws.add_app("a", "run")
    return ws


def seq_scans(conn: Any) -> dict[str, int]:
    return dict(conn.exec_driver_sql("SELECT relname, seq_scan FROM pg_stat_xact_user_tables").all())


def test_a_writer_batch_reads_no_table_from_end_to_end(pg_ws: Workspace) -> None:
    ws = pg_ws
    ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(10_000)])
    sid = sessions.start(ws, job_mode="serial")
    got = claims.claim(ws, sid, SEL, 200)
    assert len(got) == 200
    changes = [Change(j.id, j.state, S.RUNNING) for j in got] + [Change(j.id, S.RUNNING, S.RUN_DONE) for j in got]
    with claims.hot_write(ws) as conn:
        before = seq_scans(conn)  # what the backend has not yet reported: the count goes on over transactions
        done = apply(conn, changes, "test", strict=False, lock=False)
        after = seq_scans(conn)
    assert len(done) == 400
    assert after == before
    assert ws.count(state="RUN_DONE") == 200


def test_with_no_urgent_job_the_urgent_query_reads_the_urgent_index(pg_ws: Workspace) -> None:
    ws = pg_ws
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(20_000)])
    with claims.hot_write(ws) as c:
        sql = claims.urgent_sql(c, SEL, RUNNABLE, 1000).replace("%%", "%")
        plan = "\n".join(r[0] for r in c.exec_driver_sql(f"EXPLAIN {sql}").all())
    assert "ix_jobs_urgent" in plan, plan
    urgent = ws.add_jobs([{"name": f"u{i}", "app": "a", "priority": 1 + i % 3} for i in range(3)])
    sid = sessions.start(ws, job_mode="serial")
    got = claims.claim(ws, sid, SEL, 5)
    assert [c.id for c in got] == [urgent[2], urgent[1], urgent[0], ids[0], ids[1]]


def test_asking_whether_anything_is_left_reads_the_state_index_and_stops(pg_ws: Workspace,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each EXISTS a plain index scan, which stops at its first job: neither a scan of `jobs` nor a bitmap,
    which would read every job of a state first."""
    ws = pg_ws
    ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(5_000)])
    seen: list[str] = []
    raw = lookups.db.raw

    def grab(conn: Any, sql: str, *a: Any, **k: Any) -> Any:
        seen.append(sql)
        return raw(conn, sql, *a, **k)

    monkeypatch.setattr(lookups.db, "raw", grab)
    assert lookups.nothing_left(ws, SEL) is False
    monkeypatch.undo()
    assert len(seen) == 1
    with ws.read() as c:
        claims.in_order(c)  # what nothing_left's transaction set
        plan = "\n".join(r[0] for r in c.exec_driver_sql(f"EXPLAIN {seen[0]}").all())
    assert "Seq Scan" not in plan and "Bitmap" not in plan and "Index Scan using ix_jobs_state_id" in plan, plan
