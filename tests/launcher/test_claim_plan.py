"""The claim reads its indexes whatever statistics the database holds, and stays correct.

On a million-job SQLite workspace, ANALYZE (which PRAGMA optimize also runs) once turned the claim's
`state IN (...) AND session_id IS NULL ... ORDER BY id LIMIT n` into a full scan of `jobs` (0.2 s a claim). A few
thousand jobs in one state tip SQLite's planner the same way, so these tests run ANALYZE (and then forge the
statistics of 10,000,000 jobs), record every statement the claim really runs (sqlite3's trace callback), and
ask SQLite for the plan of each: the partial index of the state's claimable jobs, or that of urgent jobs for
the urgent-first claim, never a scan or a sort of them all.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import and_, select

from sluice.api import Workspace, claims, lookups, sessions
from sluice.api.claims import Selection
from sluice.states import RUNNABLE, S
from sluice.store.models import jobs

SEL = Selection(max_cores=64)


def campaign(ws: Workspace, n: int = 6000) -> list[int]:
    ws.add_app("a", "run")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(n)])
    ws.add_jobs([{"name": f"u{i}", "app": "a", "priority": 1 + i % 3} for i in range(5)])
    return ids


def plans(ws: Workspace, statements: list[str]) -> list[str]:
    """The plans of the claim's queries (its SELECTs of ids from jobs), one line each."""
    queries = [q for q in statements if "SELECT id FROM jobs" in q and "ORDER BY" in q]
    assert queries, statements
    out = []
    with ws.engine.connect() as c:
        for q in queries:
            rows = c.exec_driver_sql(f"EXPLAIN QUERY PLAN {q}").all()
            out.append(" | ".join(r[-1] for r in rows))
    return out


def old_shape_plan(ws: Workspace) -> str:
    """The plan of the claim as it was (both states in one IN list): what the statistics do to it (a scan of
    the table, or a sort of all the runnable jobs)."""
    q = select(jobs.c.id).where(and_(jobs.c.state.in_(sorted(RUNNABLE)), jobs.c.session_id.is_(None),
                                     SEL.where())).order_by(jobs.c.id).limit(2000)
    with ws.engine.connect() as c:
        sql = str(q.compile(dialect=c.dialect, compile_kwargs={"literal_binds": True}))
        return " | ".join(r[-1] for r in c.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all())


def bad(plan: str) -> bool:
    """A plan that reads every row (a scan), or sorts them all to take the lowest ids."""
    return "SCAN jobs" in plan or "TEMP B-TREE FOR ORDER BY" in plan


def assert_indexed(found: list[str]) -> None:
    assert all("SCAN jobs" not in p for p in found), found
    assert any("USING INDEX ix_jobs_urgent" in p for p in found), found
    assert any("USING INDEX ix_jobs_claim_preprocessed (id>?)" in p for p in found), found


def test_after_analyze_the_claim_uses_its_indexes_and_takes_urgent_then_lowest(sqlite_ws: Workspace,
                                                                              traced: list[str]) -> None:
    ws = sqlite_ws
    ids = campaign(ws)
    with ws.engine.begin() as c:
        c.exec_driver_sql("ANALYZE")
    assert bad(old_shape_plan(ws))  # the data does tip the planner: the test can fail
    sid = sessions.start(ws, job_mode="serial")
    traced.clear()
    got = claims.claim(ws, sid, SEL, 100)
    assert_indexed(plans(ws, traced))
    urgent = [c for c in got if c.priority]
    assert [c.priority for c in urgent] == [3, 2, 2, 1, 1] and got[:5] == urgent
    assert [c.id for c in got[5:]] == ids[:95]


def test_forged_statistics_of_ten_million_jobs_change_nothing(sqlite_ws: Workspace, traced: list[str]) -> None:
    """Whatever sqlite_stat1 says (here: 10,000,000 jobs, all in one state), the plan is the index."""
    ws = sqlite_ws
    ids = campaign(ws, 500)
    with ws.engine.begin() as c:
        c.exec_driver_sql("ANALYZE")
        c.exec_driver_sql("DELETE FROM sqlite_stat1 WHERE tbl = 'jobs'")
        for idx, stat in (("ix_jobs_state_id", "10000000 10000000 1"), ("ix_jobs_workflow", "10000000 10000000"),
                          ("ix_jobs_claim_preprocessed", "10000000 1"), ("ix_jobs_claim_restart_ready", "10000000 1"),
                          ("ix_jobs_name", "10000000 1"), ("ix_jobs_urgent", "10000000 10000000 10000000 1"),
                          (None, "10000000")):
            c.exec_driver_sql("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('jobs', ?, ?)", (idx, stat))
        c.exec_driver_sql("ANALYZE sqlite_schema")  # load the statistics just written
    ws.engine.dispose()  # every connection reads them afresh
    assert bad(old_shape_plan(ws))
    sid = sessions.start(ws, job_mode="serial")
    traced.clear()
    got = claims.claim(ws, sid, SEL, 50)
    assert_indexed(plans(ws, traced))
    assert [c.id for c in got[5:]] == ids[:45]


def test_a_claim_from_a_cursor_goes_on_above_it_then_back_to_what_lies_below(sqlite_ws: Workspace) -> None:
    """`after` starts the scan above the caller's last claim; given-back jobs below it are still found once
    nothing is left above."""
    ws = sqlite_ws
    ws.add_app("a", "run")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(300)])
    sid = sessions.start(ws, job_mode="serial")
    first = claims.claim(ws, sid, SEL, 100)
    claims.unclaim(ws, sid, [c.id for c in first[10:20]])  # ten given back, below the cursor
    after = {S.PREPROCESSED.value: first[-1].id}
    second = claims.claim(ws, sid, SEL, 150, after=after)
    assert [c.id for c in second] == ids[100:250]
    third = claims.claim(ws, sid, SEL, 100, after={S.PREPROCESSED.value: second[-1].id})
    assert sorted(c.id for c in third) == sorted(ids[250:300] + ids[10:20])
    assert claims.claim(ws, sid, SEL, 100, after={S.PREPROCESSED.value: ids[-1]}) == []
    assert {j.session_id for j in ws.jobs()} == {sid}


def test_on_postgresql_the_claim_reads_the_partial_index_in_order(tmp_path: Any,
                                                                  request: pytest.FixtureRequest) -> None:
    """PostgreSQL's estimate of the selection's conditions is far too low: left alone it gathered every runnable
    job through a bitmap and sorted them, each claim. The claim's transaction forbids that plan; with most jobs
    done, the primary key would walk them all, and the partial index of claimable jobs is read instead."""
    from tests.conftest import make_workspace

    ws = make_workspace("postgresql", tmp_path / "ws", request)
    ws.add_app("a", "run")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(20_000)])
    with ws.engine.begin() as c:  # mostly done; of the last tenth, runnable, other launchers hold half
        c.exec_driver_sql(f"UPDATE jobs SET state = 'JOB_FINISHED' WHERE id < {ids[18_000]}")
        c.exec_driver_sql(f"UPDATE jobs SET session_id = 999 WHERE id >= {ids[18_000]} AND mod(id, 2) = 0")
    with ws.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("VACUUM ANALYZE jobs")
    with ws.engine.begin() as c:
        claims.in_order(c)
        sql = claims.state_sql(c, SEL, S.PREPROCESSED, 2000, after=100).replace("%%", "%")
        plan = "\n".join(r[0] for r in c.exec_driver_sql(f"EXPLAIN {sql}").all())
    assert "Index Scan using ix_jobs_claim_preprocessed" in plan and "Sort" not in plan and "Bitmap" not in plan, plan
    sid = sessions.start(ws, job_mode="serial")
    got = claims.claim(ws, sid, SEL, 10, after={S.PREPROCESSED.value: ids[18_005]})
    assert [c.id for c in got] == [j for j in ids[18_006:18_030] if j % 2][:10]


def test_asking_whether_anything_is_left_reads_no_table_from_end_to_end(sqlite_ws: Workspace,
                                                                          traced: list[str]) -> None:
    """A launcher out of work asks four times a second whether any job it could run has not ended; with
    16 launchers on one database, a count of every such job (a scan) was the server's biggest cost."""
    ws = sqlite_ws
    campaign(ws)
    with ws.engine.begin() as c:
        c.exec_driver_sql("ANALYZE")
    traced.clear()
    assert lookups.nothing_left(ws, SEL) is False
    queries = [q for q in traced if "FROM jobs" in q]
    assert len(queries) == 1, traced
    with ws.engine.connect() as c:
        plan = " | ".join(r[-1] for r in c.exec_driver_sql(f"EXPLAIN QUERY PLAN {queries[0]}").all())
    assert "SCAN jobs" not in plan and "USING INDEX ix_jobs_state_id (state=?)" in plan, plan


def test_nothing_is_left_once_every_job_the_selection_takes_has_ended(ws: Workspace) -> None:
    ws.add_app("a", "run")
    small, big = ws.add_jobs([{"name": "small", "app": "a"}, {"name": "big", "app": "a", "num_nodes": 8}])
    assert lookups.nothing_left(ws, SEL) is False
    ws.kill(small)
    assert lookups.nothing_left(ws, SEL) is True  # the 8-node job is not this selection's
    assert lookups.nothing_left(ws, Selection(max_cores=64, max_nodes=8, serial_only=False)) is False
    ws.kill(big)
    assert lookups.nothing_left(ws, Selection(max_cores=64, max_nodes=8, serial_only=False)) is True
