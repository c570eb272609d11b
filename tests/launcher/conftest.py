"""Fixtures of the launcher's tests."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from sluice.api import Workspace
from sluice.launcher import cengine


@pytest.fixture(params=["c", "python"])
def engine(request: pytest.FixtureRequest) -> str:
    """Each spawn engine in turn: the compiled one (where pip built it) and the pure-Python one."""
    if request.param == "c" and not cengine.AVAILABLE:
        pytest.skip("the compiled engine was not built here (see test_the_compiled_engine_was_built...)")
    return str(request.param)


@pytest.fixture
def traced(sqlite_ws: Workspace) -> Iterator[list[str]]:
    """Every SQL statement the SQLite workspace's connections run from here on (sqlite3's trace callback)."""
    seen: list[str] = []

    def trace(dbapi: Any, _record: Any) -> None:
        if isinstance(dbapi, sqlite3.Connection):
            dbapi.set_trace_callback(seen.append)

    event.listen(sqlite_ws.engine, "connect", trace)
    sqlite_ws.engine.dispose()
    yield seen
    event.remove(sqlite_ws.engine, "connect", trace)
    sqlite_ws.engine.dispose()
