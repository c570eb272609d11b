"""The service's demand query (`batch.work_shapes`): exact counts by shape, read from ix_jobs_work alone.

On 10,000,000 jobs of which 2,000,000 were runnable, the GROUP BY over the table took 2 s a service pass (target
1 s); the partial index of the jobs a launcher could take, keyed by shape, makes it a walk of that index.
"""

from __future__ import annotations

from typing import Any

from sluice.api import Workspace, batch, claims, sessions
from sluice.api.claims import Selection
from sluice.states import PROCESSABLE, RUNNABLE
from sluice.store.models import WORKABLE


def test_the_index_predicate_names_exactly_the_states_a_launcher_could_take() -> None:
    assert WORKABLE == tuple(sorted(RUNNABLE | PROCESSABLE))


def _campaign(ws: Workspace) -> None:
    ws.add_app("a", "run")
    ws.add_jobs([{"name": f"s{i}", "app": "a"} for i in range(300)])
    ws.add_jobs([{"name": f"m{i}", "app": "a", "num_nodes": 8, "ranks_per_node": 4} for i in range(20)])
    ws.add_jobs([{"name": f"q{i}", "app": "a", "queue": "gpu", "threads_per_rank": 2} for i in range(7)])


def test_counts_by_shape_leave_out_held_and_ended_jobs(ws: Workspace) -> None:
    _campaign(ws)
    sid = sessions.start(ws, job_mode="serial")
    held = claims.claim(ws, sid, Selection(max_cores=64), 50)  # a launcher holds 50 one-node jobs
    assert len(held) == 50
    ws.kill_jobs([j.id for j in ws.jobs(limit=300)][-10:])  # ended: not work
    got = sorted(batch.work_shapes(ws), key=lambda r: (r[0] or "", r[1]))
    assert got == [(None, 1, 1, 1, 240), (None, 8, 4, 1, 20), ("gpu", 1, 1, 2, 7)]


def test_on_sqlite_the_query_reads_the_index_alone_whatever_the_statistics(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    _campaign(ws)
    with ws.engine.begin() as c:
        c.exec_driver_sql("ANALYZE")
        c.exec_driver_sql("DELETE FROM sqlite_stat1 WHERE tbl = 'jobs'")
        for idx, stat in (("ix_jobs_state_id", "10000000 10 1"), ("ix_jobs_work", "10000000 10000000 1 1 1 1 1"),
                          (None, "10000000")):
            c.exec_driver_sql("INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES ('jobs', ?, ?)", (idx, stat))
        c.exec_driver_sql("ANALYZE sqlite_schema")
    ws.engine.dispose()
    seen: list[str] = []
    with ws.engine.connect() as c:
        raw: Any = c.connection.driver_connection
        raw.set_trace_callback(seen.append)
    batch.work_shapes(ws)
    query = next(q for q in seen if "GROUP BY" in q)
    with ws.engine.connect() as c:
        plan = " | ".join(r[-1] for r in c.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}").all())
    assert "USING COVERING INDEX ix_jobs_work" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
