"""A user's call that the server makes a deadlock's victim is run again, not failed.

Launchers, the service and users lock the same job rows, sometimes in different orders; PostgreSQL and
MariaDB then break the cycle by rolling one transaction back. Here a second session really closes such a cycle
around `kill_jobs`, and the server picks the kill: on PostgreSQL the waiter whose deadlock_timeout comes first
(the kill, which waited first), on MariaDB the lighter transaction (the other session wrote rows first).
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from sluice.api import Workspace
from sluice.errors import DatabaseError
from sluice.store import db


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_a_kill_chosen_as_a_deadlocks_victim_is_run_again(ws: Workspace, backend: str) -> None:
    ws.add_app("a", "/bin/true")
    a, b, c = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(3)])
    url = ws.engine.url.render_as_string(hide_password=False)
    other = create_engine(url, poolclass=NullPool)
    watch = create_engine(url, poolclass=NullPool)
    holds_b, cycle_closed, errors = threading.Event(), threading.Event(), []

    def waiting() -> int:
        sql = ("SELECT count(*) FROM pg_locks WHERE NOT granted" if backend == "postgresql" else
               "SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'")
        with watch.connect() as w:
            return int(w.execute(text(sql)).scalar() or 0)

    def close_the_cycle() -> None:
        try:
            with other.connect() as o, o.begin():
                if backend == "mysql":  # heavier than the kill, so InnoDB rolls the kill back
                    for i in range(20):
                        o.execute(text("INSERT INTO events (job_id, from_state, to_state, timestamp, actor) "
                                       "VALUES (:j, 'READY', 'READY', :t, 'test')"), {"j": c, "t": float(i)})
                o.execute(text("SELECT id FROM jobs WHERE id = :b FOR UPDATE"), {"b": b})
                holds_b.set()
                deadline = time.monotonic() + 20
                while waiting() == 0 and time.monotonic() < deadline:  # the kill holds a, waits for b
                    time.sleep(0.02)
                o.execute(text("SELECT id FROM jobs WHERE id = :a FOR UPDATE"), {"a": a})  # a cycle
                cycle_closed.set()  # granted: the server rolled the kill back
                time.sleep(0.2)
        except Exception as e:  # pragma: no cover - what the assertion below reports
            errors.append(e)

    t = threading.Thread(target=close_the_cycle, daemon=True)
    t.start()
    assert holds_b.wait(20)
    try:
        killed = ws.kill_jobs([a, b])
    except DatabaseError as e:
        pytest.fail(f"the kill failed instead of running again: {e}")
    t.join(30)
    other.dispose()
    watch.dispose()
    assert not errors and cycle_closed.is_set(), errors  # the server did break a cycle, and not the other side
    assert killed == [a, b]
    assert [ws.job(j).state for j in (a, b, c)] == ["USER_KILLED", "USER_KILLED", "PREPROCESSED"]
    assert [e.to_state for e in ws.history(a)].count("USER_KILLED") == 1  # the rolled-back try wrote nothing


def test_only_a_deadlock_is_run_again() -> None:
    """Other database errors (a constraint, a lost server) are not conflicts: they are raised as they are."""
    calls = []

    @db.retry_conflicts
    def fails(conflict: bool) -> None:
        calls.append(1)
        e = DatabaseError("database error: x")
        e.conflict = conflict
        raise e

    with pytest.raises(DatabaseError):
        fails(False)
    assert len(calls) == 1
    with pytest.raises(DatabaseError):
        fails(True)
    assert len(calls) == 1 + db.CONFLICT_ATTEMPTS
