"""Shared helpers for the sluice benchmarks: a throw-away workspace on SQLite, PostgreSQL or MariaDB.

`--db sqlite` (default) puts the database in a fresh temporary workspace. A server URL names the server and
a database we are allowed to connect to (e.g. `postgresql+psycopg://postgres@127.0.0.1:5432/test`); the
benchmark creates its OWN database `sluice_bench_<random>` there, uses it, and drops it at the end. The
database named in the URL is only used to issue CREATE/DROP DATABASE; its tables are never touched.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from sluice.api import Workspace  # noqa: E402
from sluice.store import db  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MARIA = "mysql+pymysql://root@127.0.0.1:3306/test"
ALIASES = {"sqlite": None, "pg": PG, "postgres": PG, "postgresql": PG, "maria": MARIA, "mariadb": MARIA,
           "mysql": MARIA}


def add_db_arg(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--db", default="sqlite",
                    help="sqlite (default: temp workspace), pg, mariadb, or a server URL "
                         f"(e.g. {PG}); a private sluice_bench_* database is created there and dropped")
    ap.add_argument("--dir", default=None, help="parent directory of the temporary workspace (e.g. /dev/shm)")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON object")


def backend_name(db_arg: str) -> str:
    url = ALIASES.get(db_arg, db_arg)
    return "sqlite" if url is None or url.startswith("sqlite") else make_url(url).get_backend_name()


@contextlib.contextmanager
def workspace(db_arg: str = "sqlite", parent: str | None = None) -> Iterator[Workspace]:
    """A fresh workspace (temp dir) whose database is private to this run; everything removed afterwards."""
    url = ALIASES.get(db_arg, db_arg)
    root = Path(tempfile.mkdtemp(prefix="sluice_bench.", dir=parent))
    admin = dbname = None
    try:
        if url is None or url.startswith("sqlite"):
            ws = Workspace.create(root / "ws")
        else:
            u = make_url(url)
            dbname = f"sluice_bench_{secrets.token_hex(4)}"
            admin = create_engine(u, isolation_level="AUTOCOMMIT")
            with admin.connect() as c:
                c.execute(text(f"CREATE DATABASE {dbname}"))
            ws = Workspace.create(root / "ws", u.set(database=dbname).render_as_string(hide_password=False))
        yield ws
    finally:
        db.dispose_all()
        if admin is not None and dbname is not None:
            force = " WITH (FORCE)" if admin.dialect.name == "postgresql" else ""
            for attempt in range(5):  # the server may be restarting (other test suites share it)
                try:
                    admin.dispose()
                    with admin.connect() as c:
                        c.execute(text(f"DROP DATABASE IF EXISTS {dbname}{force}"))
                    break
                except Exception:
                    if attempt == 4:
                        print(f"bench: could not drop database {dbname}; drop it by hand", file=sys.stderr)
                    time.sleep(2)
            admin.dispose()
        shutil.rmtree(root, ignore_errors=True)


def load() -> str:
    """The 1/5/15-minute load averages, as `uptime` shows them."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def wall(argv: list[str], **kw: Any) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t0


def specs(n: int, app: str = "noop", start: int = 0, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": f"j{i}", "app": app, **extra} for i in range(start, start + n)]


def big_campaign(ws: Workspace, n: int, updates: list[str], **extra: Any) -> float:
    """n jobs of app `sim` added the real way (add_jobs, 100k at a time: events and indexes included), then raw
    `updates` (synthetic state moves, no events) and ANALYZE; returns the seconds it took."""
    ws.add_app("sim", "/bin/echo {x}")
    t0 = time.perf_counter()
    for start in range(0, n, 100_000):
        ws.add_jobs([{"name": f"sim{i}", "app": "sim", "params": {"x": i}, **extra}
                     for i in range(start, min(n, start + 100_000))])
    with db.write(ws.engine) as conn:
        for sql in updates:
            conn.execute(text(sql))  # text(): escapes % for psycopg
        if conn.dialect.name in ("postgresql", "sqlite"):
            conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - t0
