"""`sluice dbserver`: a real PostgreSQL server of the workspace's own, started from the system's binaries.

The tests run as root, so they take the path a root user takes: initdb, pg_ctl and the server run as an
unprivileged account that owns the data directory. A server is always stopped when its test ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.cli.conftest import ok, user_error

from sluice import dbserver
from sluice.api import Workspace, migrate
from sluice.cli.main import cli
from sluice.errors import DatabaseError, UserError
from sluice.launcher.launcher import Launcher, Options
from sluice.states import S
from sluice.store import db

try:
    dbserver.find_bindir()
    HAVE_PG = True
except UserError:
    HAVE_PG = False
needs_pg = pytest.mark.skipif(not HAVE_PG, reason="no PostgreSQL server binaries (apt-get install postgresql)")


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory the server's account can enter (pytest's own tmp dirs are 0700 root's); servers started under
    it are stopped afterwards."""
    d = Path(tempfile.mkdtemp(prefix="sluice-dbserver-"))
    d.chmod(0o711)
    try:
        yield d
    finally:
        for data in d.glob("*/dbserver/data"):
            try:
                dbserver.stop(data.parent.parent)
            except Exception:
                pass
        db.dispose_all()
        shutil.rmtree(d, ignore_errors=True)


def sluice(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def _password(root: Path) -> str:
    return (root / "dbserver" / "passfile").read_text().strip().rsplit(":", 1)[1]


def _run_two_launchers(root: Path) -> list[int]:
    """Two launchers, each on its own Workspace (as two processes would be), until the work is done."""
    sessions: list[int] = []

    def one() -> None:
        s = Launcher(Workspace.open(root), Options(idle_timeout=2, status=False)).run()
        sessions.append(s.session_id)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return sessions


@needs_pg
def test_a_server_runs_a_campaign_with_two_launchers_and_keeps_it_across_a_restart(place: Path) -> None:
    root = Workspace.create(place / "ws").path
    res = ok(sluice("-w", str(root), "dbserver", "start"))
    pw = _password(root)
    url = Workspace.open(root).config.db_url
    assert url.startswith("postgresql+psycopg://sluice@127.0.0.1:") and "passfile=" in url
    for f in (root / "sluice.toml", root / "dbserver" / "server.json", root / "dbserver" / "postgres.log"):
        assert pw not in f.read_text(), f
    assert pw not in res.output
    assert stat.S_IMODE((root / "dbserver" / "passfile").stat().st_mode) == 0o600
    data = root / "dbserver" / "data"
    if os.geteuid() == 0:  # PostgreSQL refuses root: an unprivileged account owns the data and runs the server
        assert data.stat().st_uid != 0 and stat.S_IMODE(data.stat().st_mode) == 0o700
    port = dbserver.status(root).port

    ws = Workspace.open(root)
    ws.add_app("sim", "true {x}")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "sim", "params": {"x": i}} for i in range(60)])
    sessions = _run_two_launchers(root)
    assert len(sessions) == 2 and ws.count(state=S.JOB_FINISHED) == 60
    runs = Counter(e.job_id for j in ids for e in ws.job(j).history if e.to_state == S.RUNNING)
    assert runs == {j: 1 for j in ids}  # each job ran exactly once

    st = dbserver.status(root)
    assert st.running and st.port == port and st.size > 1_000_000
    assert "running on 127.0.0.1:" in ok(sluice("-w", str(root), "dbserver", "status")).output
    assert ok(sluice("-w", str(root), "dbserver", "start")).output.startswith("already running")
    ok(sluice("-w", str(root), "dbserver", "stop"))
    assert ok(sluice("-w", str(root), "dbserver", "stop")).output.startswith("not running")
    assert "stopped" in ok(sluice("-w", str(root), "dbserver", "status")).output
    db.dispose_all()
    with pytest.raises(DatabaseError):
        Workspace.open(root)

    ok(sluice("-w", str(root), "dbserver", "start"))
    assert dbserver.status(root).port == port  # the same URL: sluice.toml did not have to change
    ws = Workspace.open(root)
    assert ws.count(state=S.JOB_FINISHED) == 60 and len(ws.job(ids[0]).history) >= 4
    assert ws.add_job("after", app="sim", params={"x": 0}).id == ids[-1] + 1


@needs_pg
def test_sqlite_jobs_are_never_silently_left_behind(place: Path) -> None:
    ws = Workspace.create(place / "ws")
    ws.add_app("sim", "true {x}")
    ws.add_jobs([{"name": f"j{i}", "app": "sim", "params": {"x": i}} for i in range(30)])
    root = ws.path
    before = (root / "sluice.toml").read_text()
    user_error(sluice("-w", str(root), "dbserver", "start"), "holds 1 apps, 30 jobs in SQLite",
               "sluice dbserver start --migrate", "sluice db migrate-to")
    assert (root / "sluice.toml").read_text() == before and not (root / "dbserver").exists()
    res = ok(sluice("-w", str(root), "dbserver", "start", "--migrate"))
    assert "moved 1 apps" in res.output and "30 jobs" in res.output
    assert list(root.glob("sluice.db.migrated-*")) and not (root / "sluice.db").exists()
    db.dispose_all()
    moved = Workspace.open(root)
    assert moved.config.db_url.startswith("postgresql") and moved.count() == 30
    user_error(sluice("-w", str(root), "dbserver", "start", "--host", "0.0.0.0"), "already runs on 127.0.0.1")
    ok(sluice("-w", str(root), "dbserver", "stop"))
    ok(sluice("-w", str(root), "dbserver", "start", "--host", "0.0.0.0"))  # for launchers on compute nodes
    hba = (root / "dbserver" / "data" / "pg_hba.conf").read_text()
    assert "host all all 0.0.0.0/0 scram-sha-256" in hba and "trust" not in hba
    db.dispose_all()
    remote = Workspace.open(root)
    assert f"@{socket.gethostname()}:" in remote.config.db_url and remote.count() == 30
    assert ok(sluice("-w", str(root), "dbserver", "start")).output.startswith("already running: PostgreSQL")


@needs_pg
def test_bad_input_is_one_line_and_changes_nothing(place: Path) -> None:
    root = Workspace.create(place / "ws").path
    user_error(sluice("-w", str(root), "dbserver", "status"), "no database server", "sluice dbserver start")
    user_error(sluice("-w", str(root), "dbserver", "stop"), "no database server")
    user_error(sluice("-w", str(root), "dbserver", "start", "--host", "a b"), "bad --host")
    user_error(sluice("-w", str(root), "dbserver", "start", "--port", "80"), "--port")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        user_error(sluice("-w", str(root), "dbserver", "start", "--port", str(taken)), f"port {taken}", "in use")
    assert not (root / "dbserver" / "data").exists()
    other = Workspace.create(place / "other").path  # a workspace on someone else's server (never contacted)
    migrate.set_database_url(other, "postgresql+psycopg://me@dbhost.example:5432/campaign")
    user_error(sluice("-w", str(other), "dbserver", "start"), "would leave it behind")


@pytest.mark.skipif(os.geteuid() != 0, reason="the root path")
def test_root_needs_a_directory_the_server_account_can_enter(tmp_path: Path) -> None:
    """pytest's tmp dirs are 0700 root's: the server account cannot reach them, and says how to fix it."""
    if not HAVE_PG:
        pytest.skip("no PostgreSQL binaries")
    root = Workspace.create(tmp_path / "ws").path
    line = user_error(sluice("-w", str(root), "dbserver", "start"), "cannot enter", "chmod o+x")
    assert "PostgreSQL refuses root" in line


def test_no_binaries_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dbserver, "DEBIAN_BINS", tmp_path / "none")
    monkeypatch.setenv("PATH", str(tmp_path))
    root = Workspace.create(tmp_path / "ws").path
    user_error(sluice("-w", str(root), "dbserver", "start"), "apt-get install postgresql")
    with pytest.raises(UserError, match="apt-get install postgresql-9"):
        dbserver.find_bindir("9")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None, reason="needs root and useradd")
def test_root_makes_a_system_account_when_none_exists(tmp_path: Path) -> None:
    import pwd
    import subprocess

    name = f"sluicet{uuid.uuid4().hex[:8]}"
    try:
        acct = dbserver.server_account(tmp_path / "data", candidates=(), new=name)
        assert acct is not None and acct.pw_name == name and acct.pw_uid != 0
        assert pwd.getpwnam(name).pw_shell.endswith("nologin")
        assert dbserver.server_account(tmp_path / "data", candidates=(), new=name) == acct  # made once
    finally:
        subprocess.run(["userdel", name], capture_output=True)
    (tmp_path / "data").mkdir()
    os.chown(tmp_path / "data", 65534, 65534)
    owner = dbserver.server_account(tmp_path / "data")
    assert owner is not None and owner.pw_uid == 65534  # an existing data directory keeps its owner


def test_a_move_refused_while_a_launcher_runs_makes_no_server(place: Path) -> None:
    ws = Workspace.create(place / "ws")
    ws.add_app("long", "sleep 60")
    ws.add_job("long", app="long")
    la = Launcher(ws, Options(idle_timeout=60, kill_grace_s=0.5, status=False))
    t = threading.Thread(target=la.run)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while ws.count(state=S.RUNNING) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        user_error(sluice("-w", str(ws.path), "dbserver", "start", "--migrate"), "launcher session", "is running")
        assert not (ws.path / "dbserver").exists() and (ws.path / "sluice.db").exists()
    finally:
        la.stop("test over")
        t.join(30)


def test_a_port_left_in_time_wait_is_free_for_a_restart() -> None:
    """A stopped server's port keeps TIME_WAIT connections for a minute; postgres binds through them
    (SO_REUSEADDR), so the restart must reuse the port, not move the workspace's URL."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()  # the server's side closes first: its end waits in TIME_WAIT
    time.sleep(0.05)
    client.close()
    srv.close()
    assert dbserver._free("127.0.0.1", port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert not dbserver._free("127.0.0.1", busy.getsockname()[1])
