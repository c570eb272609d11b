"""Fixtures: a fresh workspace on each real backend (SQLite file, PostgreSQL and MariaDB servers).

A database per backend is created for the test session (per xdist worker) and dropped after; each test then
starts from empty tables. SLUICE_TEST_BACKENDS=sqlite,postgresql,mysql picks the backends (default: all).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from sluice.api import Workspace
from sluice.store import db
from sluice.store.models import metadata

PG_ADMIN = os.environ.get("SLUICE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MY_ADMIN = os.environ.get("SLUICE_TEST_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/test")
BACKENDS = os.environ.get("SLUICE_TEST_BACKENDS", "sqlite,postgresql,mysql").split(",")
REPO = Path(__file__).resolve().parents[1]
START_SLURM = REPO / "scripts" / "slurm-cluster.sh"
"""The project's own Slurm cluster script: `start [--nodes N] ...` (also the default), `stop`, `status`."""


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A 4-node Slurm cluster on this host (idempotent start; each xdist worker may call it)."""
    import subprocess

    proc = subprocess.run(["bash", str(START_SLURM), "start", "--nodes", "4"], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"slurm-cluster.sh start failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def _server_db(admin_url: str, kind: str) -> Iterator[str]:
    name = f"sluice_t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)  # survives restarts
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        db.dispose_all()
        with admin.connect() as c:
            if kind == "postgresql":
                c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                c.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    yield from _server_db(PG_ADMIN, "postgresql")


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    yield from _server_db(MY_ADMIN, "mysql")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upgraded empty SQLite database, copied for each test (faster than migrating each time)."""
    d = tmp_path_factory.mktemp("template")
    Workspace.create(d / "ws")
    db.dispose_all()
    return d / "ws" / "sluice.db"


def _wipe(url: str) -> None:
    eng = db.engine(url)
    with eng.begin() as conn:
        for t in reversed(metadata.sorted_tables):
            conn.execute(t.delete())


def make_workspace(backend: str, path: Path, request: pytest.FixtureRequest) -> Workspace:
    if backend not in BACKENDS:
        pytest.skip(f"backend {backend} not selected by SLUICE_TEST_BACKENDS")
    if backend == "sqlite":
        path.mkdir(parents=True)
        shutil.copy(request.getfixturevalue("sqlite_template"), path / "sluice.db")
        (path / "data").mkdir()
        (path / "logs").mkdir()
        from sluice import config

        config.write_new(path, None)
        return Workspace.open(path)
    url = request.getfixturevalue("pg_url" if backend == "postgresql" else "mysql_url")
    ws = Workspace.create(path, db_url=url)
    _wipe(url)
    return ws


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def ws(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
       monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A fresh workspace on each backend; SLUICE_WORKSPACE points at it (as it would inside a job)."""
    w = make_workspace(backend, tmp_path / "ws", request)
    monkeypatch.setenv("SLUICE_WORKSPACE", str(w.path))
    return w


@pytest.fixture
def sqlite_ws(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    w = make_workspace("sqlite", tmp_path / "ws", request)
    monkeypatch.setenv("SLUICE_WORKSPACE", str(w.path))
    return w
