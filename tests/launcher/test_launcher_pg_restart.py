"""PostgreSQL restarted under a running launcher: it reconnects and finishes the campaign.

This restarts the machine's real PostgreSQL server, which would break any other test talking to it at the same
time, so it is marked `serial` and skips itself when pytest-xdist runs more than one worker. Run it alone:

    .venv/bin/python -m pytest -m serial -p no:xdist tests/launcher
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from tests.conftest import BACKENDS, PG_ADMIN

from sluice.api import Workspace
from sluice.states import S
from sluice.store import db

pytestmark = [pytest.mark.serial, pytest.mark.slow]


def _pg_ctl(action: str) -> subprocess.CompletedProcess[str]:
    (version,) = os.listdir("/etc/postgresql")
    return subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                          capture_output=True, text=True, timeout=120)


def _pg_up() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True).returncode == 0


@pytest.fixture
def own_pg_db() -> Iterator[str]:
    """A database of its own, through an unpooled admin engine: the session-wide `pg_url` fixture keeps a pooled
    admin connection that the restart would kill under it."""
    if "postgresql" not in BACKENDS:
        pytest.skip("postgresql not selected by SLUICE_TEST_BACKENDS")
    name = f"sluice_r_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        db.dispose_all()
        if not _pg_up():
            _pg_ctl("start")
        with admin.connect() as c:
            c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def test_postgres_restart_under_running_launcher(tmp_path: Path, own_pg_db: str) -> None:
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        pytest.skip("restarts the shared PostgreSQL server: run serially (pytest -m serial -p no:xdist)")
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not os.path.isdir("/etc/postgresql"):
        pytest.skip("needs root and a Debian PostgreSQL cluster (pg_ctlcluster)")
    ws = Workspace.create(tmp_path / "ws", db_url=own_pg_db)
    ws.add_app("mark", "/bin/sh -c {cmd}")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "mark", "params": {"cmd": "echo s >> m; sleep 0.05; echo d >> m"}}
                       for i in range(300)])
    log = tmp_path / "launcher.log"
    env = dict(os.environ, SLUICE_WORKSPACE=str(ws.path), SLUICE_CORES_PER_NODE="4")
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "sluice", "launcher", "-q",
                              "--heartbeat", "1"], env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while ws.count(state=S.JOB_FINISHED) < 40:
            assert p.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "launcher made no progress"
            time.sleep(0.1)
        res = _pg_ctl("restart")
        assert res.returncode == 0, res.stderr
        assert p.wait(180) == 0, log.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if not _pg_up():
            _pg_ctl("start")
    assert ws.count(state=S.JOB_FINISHED) == len(ids), (ws.summary(), log.read_text()[-3000:])
    assert not ws.jobs(state=S.RUNNING)
    assert all(s["ended_at"] is not None for s in ws.sessions())
    text = log.read_text()
    assert "stopped: no more work" in text, text[-3000:]
    # no job was lost or run twice by the restart
    for j in ws.jobs():
        assert (j.path / "m").read_text() == "s\nd\n", (j.id, ws.history(j.id))
