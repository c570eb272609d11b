"""`sluice db migrate-to URL`: an SQLite workspace of 100,000 jobs moved into real PostgreSQL and MariaDB
databases made for the test, every row of every table compared; and every refusal leaving everything as it was.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select
from tests.cli.conftest import ok, user_error
from tests.conftest import BACKENDS, MY_ADMIN, PG_ADMIN, _server_db

from sluice.api import Workspace
from sluice.api import migrate as mig
from sluice.cli.main import cli
from sluice.errors import UserError
from sluice.launcher.launcher import Launcher, Options
from sluice.states import S
from sluice.store import db
from sluice.store.models import batch_jobs, metadata

N = 100_000


def fresh_db(kind: str) -> contextlib.AbstractContextManager[str]:
    """A database made for one test on the shared server, dropped after it."""
    if kind not in BACKENDS:
        pytest.skip(f"backend {kind} not selected by SLUICE_TEST_BACKENDS")
    return contextlib.contextmanager(_server_db)(PG_ADMIN if kind == "postgresql" else MY_ADMIN, kind)


def build(root: Path, n: int) -> Path:
    """An SQLite workspace: n jobs, a DAG of 300 edges, a launcher's run of 20 jobs (events, a session), a batch
    job record, and a shell app (a boolean column)."""
    ws = Workspace.create(root)
    ws.add_app("sim", "true {x}")
    ws.add_app("sh", "echo {x} > out.txt", shell=True)
    gen = ws.add_jobs([{"name": f"j{i}", "app": "sim", "params": {"x": i}, "workflow": "scan",
                        "tags": {"k": str(i % 7)}, "data": {"i": i, "f": i / 3}} for i in range(n - 120)])
    ws.add_jobs([{"name": f"c{i}", "app": "sim", "params": {"x": i}, "workflow": "merge",
                  "parents": gen[i * 3 : i * 3 + 3]} for i in range(100)])
    ws.add_jobs([{"name": f"r{i}", "app": "sh", "params": {"x": i}, "workflow": "run"} for i in range(20)])
    s = Launcher(ws, Options(idle_timeout=0.5, status=False, workflows=("run",))).run()
    assert s.finished == 20
    with ws.write() as conn:
        conn.execute(insert(batch_jobs).values(scheduler="slurm", native_id="123", queue="debug", num_nodes=2,
                                               wall_time_min=30.0, job_mode="mpi", state="finished",
                                               filters={"workflows": ["run"]}, submitted_at=time.time()))
    db.dispose_all()
    return root


@pytest.fixture(scope="module")
def campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("campaign") / "ws", N)


@pytest.fixture(scope="module")
def small_campaign(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("small") / "ws", 1000)


def rows(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in key order, as SQLAlchemy reads them (JSON parsed, booleans as bools)."""
    eng = db.engine(url)
    with eng.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(select(t).order_by(*t.primary_key.columns))]
                for t in metadata.sorted_tables}


def _toml_url(root: Path) -> str:
    import tomllib

    return str(tomllib.loads((root / "sluice.toml").read_text())["database"]["url"])


def check_move(campaign: Path, root: Path, kind: str, n: int) -> None:
    """Move a copy of the campaign into a fresh database of `kind`; compare every row of every table."""
    shutil.copytree(campaign, root)
    with fresh_db(kind) as url:
        moved = mig.migrate(root, url)
        kept = moved.kept_as
        assert kept is not None and kept.name.startswith("sluice.db.migrated-") and kept.exists()
        assert not (root / "sluice.db").exists()
        assert _toml_url(root) == url
        before, after = rows(f"sqlite:///{kept}"), rows(url)
        assert {t: len(r) for t, r in before.items()} == moved.counts
        assert moved.counts["jobs"] == n and moved.counts["job_parents"] == 300
        assert moved.counts["events"] >= 3 * (n - 120) and moved.counts["launcher_sessions"] == 1
        for table in before:
            assert after[table] == before[table], table  # same ids, same values, every event included
        ws = Workspace.open(root)  # the workspace now runs on the server; new ids come after the copied ones
        assert ws.config.db_url == url
        assert ws.add_job("after", app="sim", params={"x": 0}).id == n + 1
        assert ws.add_app("third", "true").id == 3
        assert ws.count(state=S.JOB_FINISHED) == 20
        db.dispose_all()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_campaign_moves_row_for_row(small_campaign: Path, tmp_path: Path, kind: str) -> None:
    check_move(small_campaign, tmp_path / "ws", kind, 1000)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
def test_a_100000_job_campaign_moves_with_nothing_lost(campaign: Path, tmp_path: Path, kind: str) -> None:
    check_move(campaign, tmp_path / "ws", kind, N)


@pytest.fixture
def small(sqlite_ws: Workspace) -> Workspace:
    sqlite_ws.add_app("sim", "true {x}")
    sqlite_ws.add_jobs([{"name": f"j{i}", "app": "sim", "params": {"x": i}} for i in range(50)])
    return sqlite_ws


def _unchanged(root: Path) -> tuple[str, list[str]]:
    """sluice.toml and the workspace's files (the SQLite file in place, no migrated copy)."""
    names = [p.name for p in root.iterdir() if not p.name.endswith(("-wal", "-shm"))]  # WAL files come and go
    return (root / "sluice.toml").read_text(), sorted(names)


def test_refused_while_a_launcher_runs(small: Workspace) -> None:
    small.add_app("long", "sleep 60")
    small.add_job("long", app="long", workflow="long")
    la = Launcher(small, Options(idle_timeout=60, kill_grace_s=0.5, status=False, workflows=("long",)))
    t = threading.Thread(target=la.run)
    t.start()
    try:
        deadline = time.monotonic() + 20
        while small.count(state=S.RUNNING) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        before = _unchanged(small.path)
        with fresh_db("postgresql") as url:
            with pytest.raises(UserError, match=r"launcher session \d+ on .* is running"):
                mig.migrate(small.path, url)
            assert mig.counts(url) == {t.name: 0 for t in metadata.sorted_tables}  # nothing copied
        assert _unchanged(small.path) == before
    finally:
        la.stop("test over")
        t.join(30)
    with fresh_db("postgresql") as url:  # once the launcher has ended, the same move goes through
        assert mig.migrate(small.path, url).counts["jobs"] == 51
        db.dispose_all()


def test_refused_when_the_target_holds_sluice_data(small: Workspace, tmp_path: Path) -> None:
    other = Workspace.create(tmp_path / "other")
    other.add_app("x", "true")
    with fresh_db("mysql") as url:
        mig.migrate(other.path, url)
        before = _unchanged(small.path)
        res = CliRunner().invoke(cli, ["-w", str(small.path), "db", "migrate-to", url])
        user_error(res, "already holds sluice data (1 apps")
        assert _unchanged(small.path) == before
        db.dispose_all()


@pytest.mark.parametrize(("target", "fragment"), [
    ("sqlite:////tmp/elsewhere.db", "must be PostgreSQL or MariaDB"),
    ("not a url", "bad database URL"),
    ("postgresql+psycopg://postgres@127.0.0.1:5432/no_such_db_here", "cannot open database"),
])
def test_bad_targets_are_one_line(small: Workspace, target: str, fragment: str) -> None:
    before = _unchanged(small.path)
    res = CliRunner().invoke(cli, ["-w", str(small.path), "db", "migrate-to", target])
    assert res.exit_code in (2, 3) and fragment in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert _unchanged(small.path) == before


def test_the_cli_moves_a_workspace_and_a_second_move_is_refused(small: Workspace) -> None:
    with fresh_db("postgresql") as url:
        res = ok(CliRunner().invoke(cli, ["-w", str(small.path), "db", "migrate-to", url]))
        assert "moved 1 apps" in res.output and "50 jobs" in res.output and "sluice.db.migrated-" in res.output
        user_error(CliRunner().invoke(cli, ["-w", str(small.path), "db", "migrate-to", url]),
                   "already uses", "moves an SQLite workspace")
        db.dispose_all()


def test_setting_the_url_keeps_the_rest_of_sluice_toml(tmp_path: Path) -> None:
    (tmp_path / "sluice.toml").write_text('# mine\n[service]\nperiod = 5\n\n[database]  # here\n'
                                          'url = "sqlite:///sluice.db"\n# url = "old"\n\n[launcher]\nx = 1\n')
    mig.set_database_url(tmp_path, 'postgresql+psycopg://me@h/db?passfile=/a "b"/p')
    text = (tmp_path / "sluice.toml").read_text()
    assert _toml_url(tmp_path) == 'postgresql+psycopg://me@h/db?passfile=/a "b"/p'
    assert text.startswith("# mine\n[service]\nperiod = 5\n") and '# url = "old"' in text and "x = 1" in text
    (tmp_path / "sluice.toml").write_text("[service]\nperiod = 5\n")
    mig.set_database_url(tmp_path, "mysql+pymysql://me@h/db")
    assert _toml_url(tmp_path) == "mysql+pymysql://me@h/db"
