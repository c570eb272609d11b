"""The SQLAlchemy-free read path for `ls` gives exactly what the API gives, and steps aside otherwise."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from sluice import config
from sluice.api import Workspace
from sluice.states import S, State
from sluice.store import fastread


def test_state_names_match_the_state_machine() -> None:
    assert fastread.STATES == tuple(s.value for s in State)


def test_summary_and_listing_match_the_api(ws: Workspace) -> None:
    ws.add_app("a", "/bin/true")
    ws.add_jobs([{"name": f"j{i}", "app": "a", "workflow": "w1" if i % 2 else "w2"} for i in range(7)])
    ws.set_state(ws.ids()[0], S.RUNNING, by_launcher=True)
    conn = fastread.connect(str(ws.path))
    if ws.engine.dialect.name == "mysql":
        assert conn is None  # MariaDB takes the normal path
        return
    assert conn is not None  # SQLite through sqlite3, PostgreSQL through psycopg
    assert fastread.summary(conn, [], []) == ws.summary()
    assert fastread.summary(conn, ["preprocessed"], ["w1"]) == ws.summary(state="PREPROCESSED", workflow="w1")
    rows, total = fastread.listing(conn, [], ["w2"], 2) or ([], 0)
    assert total == ws.count(workflow="w2") == 4
    assert rows == [(j.id, j.name, j.workflow, j.app, j.state) for j in ws.jobs(workflow="w2", limit=2)]
    assert fastread.summary(conn, ["nonsense"], []) is None  # the API names the bad state
    conn.close()


def test_out_of_date_schema_takes_the_normal_path(sqlite_ws: Workspace) -> None:
    with sqlite_ws.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    assert fastread.connect(str(sqlite_ws.path)) is None



def test_an_unreachable_server_takes_the_normal_path(tmp_path: Path) -> None:
    """The fast path never reports connection errors itself: the API path does (one line, no password)."""
    config.write_new(tmp_path, "postgresql+psycopg://u:secret@127.0.0.1:1/x")
    assert fastread.connect(str(tmp_path)) is None
