"""The launcher's read-only questions (api/lookups.py): right answers on every backend, and reads that stay
on an index whatever the campaign holds."""

from __future__ import annotations

from sluice.api import Workspace, lookups


def test_killed_names_the_killed_jobs_among_those_asked_about(ws: Workspace) -> None:
    ws.add_app("a", "run")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(20)])
    running = ids[2:18:2]
    for j in (running[0], running[3], ids[5], ids[19]):  # two asked about; two others, one inside the range
        ws.kill(j)
    assert lookups.killed(ws, running) == [running[0], running[3]]
    assert lookups.killed(ws, []) == []
    assert lookups.killed(ws, [ids[4]]) == []


def test_with_more_kills_in_range_than_jobs_asked_about_each_is_looked_up(ws: Workspace) -> None:
    """The range read stops one past the number of ids; more kills than that between them (a workflow killed
    among the running jobs) sends the ids one by one, with the same answer."""
    ws.add_app("a", "run")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(30)])
    for j in ids[1:12]:
        ws.kill(j)
    ws.kill(ids[-1])
    assert lookups.killed(ws, [ids[0], ids[-1]]) == [ids[-1]]
    assert lookups.killed(ws, [ids[0], ids[5], ids[-1]]) == [ids[5], ids[-1]]


def test_on_sqlite_killed_reads_a_range_of_the_state_index(sqlite_ws: Workspace, traced: list[str]) -> None:
    ws = sqlite_ws
    ws.add_app("a", "run")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(3000)])
    with ws.engine.begin() as c:
        c.exec_driver_sql("ANALYZE")
    traced.clear()
    assert lookups.killed(ws, ids[100:2000]) == []
    (q,) = [s for s in traced if "FROM jobs" in s]
    with ws.engine.connect() as c:
        plan = " | ".join(r[-1] for r in c.exec_driver_sql(f"EXPLAIN QUERY PLAN {q}").all())
    assert "SCAN" not in plan and "ix_jobs_state_id (state=? AND id>? AND id<?)" in plan, plan
