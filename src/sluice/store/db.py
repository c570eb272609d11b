"""Engines, transactions and schema migrations.

SQLite runs in WAL mode with a long busy timeout, and every write transaction starts with BEGIN IMMEDIATE: a
deferred transaction that later upgrades to a write can fail at once with "database is locked" whatever the
timeout, so writers take the lock up front and readers never block them. PostgreSQL and MariaDB get
pre-ping pools so a restarted server costs a reconnect, not a crash.
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

from sluice import config
from sluice.errors import DatabaseError, DiskFull, Fault, SchemaOutOfDate, UserError, one_line
from sluice.store import fsinfo

HEAD = config.SCHEMA_HEAD
MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_MS = 60_000
CHUNK = 900
"""Ids per IN (...) list: under the 999-variable limit of SQLite before 3.32."""

T = TypeVar("T")
_engines: dict[str, Engine] = {}


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"://([^:/@]*):[^@]*@", r"://\1:***@", url)


def engine(url: str) -> Engine:
    """The process-wide engine for url (one pool per database per process)."""
    eng = _engines.get(url)
    if eng is None:
        eng = _engines[url] = _make_engine(url)
    return eng


def dispose_all() -> None:
    """Drop pooled connections (after fork, and in tests that drop databases)."""
    for eng in _engines.values():
        eng.dispose()
    _engines.clear()


def _make_engine(url: str) -> Engine:
    try:
        u = make_url(url)
    except sa_exc.ArgumentError:
        raise UserError(
            f"bad database URL {redact(url)!r}; expected e.g. sqlite:///path/sluice.db or "
            "postgresql+psycopg://user@host/db"
        ) from None
    if u.get_backend_name() == "sqlite":
        eng = create_engine(u, connect_args={"timeout": SQLITE_BUSY_MS / 1000})
        event.listen(eng, "connect", _sqlite_connect)
        event.listen(eng, "begin", _sqlite_begin)
        return eng
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "pool_recycle": 3600}
    if u.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 10}
    elif u.get_backend_name() in ("mysql", "mariadb"):
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        return create_engine(u, **kwargs)
    except (ImportError, sa_exc.NoSuchModuleError) as e:
        raise UserError(
            f"no driver for {redact(url)}: {e}; install it with `pip install sluice[postgres]` or `[mysql]`"
        ) from None


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    mode = "IMMEDIATE" if conn.get_execution_options().get("sluice_write") else "DEFERRED"
    conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def write(eng: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on error; BEGIN IMMEDIATE on SQLite.
    The driver's errors come out as Faults (fault())."""
    try:
        with eng.connect() as conn:
            conn.execution_options(sluice_write=True)
            with conn.begin():
                yield conn
    except sa_exc.DBAPIError as e:
        raise fault(e) from e


@contextmanager
def read(eng: Engine) -> Iterator[Connection]:
    """A read-only transaction (a consistent snapshot)."""
    try:
        with eng.connect() as conn, conn.begin():
            yield conn
    except sa_exc.DBAPIError as e:
        raise fault(e) from e


TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)
_FULL = re.compile(r"disk is full|no space left|disk full|table '?[^ ]*'? is full|quota exceeded|could not extend",
                   re.I)
_FULL_CODES = {"53100"}  # PostgreSQL's disk_full
_FULL_ERRNOS = {1021, 1114, 3}  # MariaDB: disk full, table full, error writing file
_CONFLICT_CODES = {"40P01", "40001"}  # PostgreSQL: deadlock_detected, serialization_failure
_CONFLICT_ERRNOS = {1213}  # MariaDB: deadlock found when trying to get lock
CONFLICT_ATTEMPTS = 6


def fault(e: sa_exc.DBAPIError) -> Fault:
    """The Fault a driver error stands for: DiskFull (retrying cannot help: say so at once), or a
    DatabaseError, transient when the server or a lock may answer on the next try."""
    orig = e.orig
    code = getattr(orig, "sqlstate", None)
    errno = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
    msg = _short(e)
    if code in _FULL_CODES or errno in _FULL_ERRNOS or _FULL.search(msg):
        return DiskFull(f"the disk holding the database is full ({msg}); free space or raise the quota, then "
                        "start again: no job is lost")
    err = DatabaseError(f"database error: {msg}")
    err.transient = isinstance(e, TRANSIENT)
    err.conflict = code in _CONFLICT_CODES or errno in _CONFLICT_ERRNOS
    return err


P = ParamSpec("P")


def _again(fn: Callable[[], T], attempts: int, worth: Callable[[Exception], bool],
           pause: Callable[[int], float]) -> T:
    """fn(), run again after `pause(i)` seconds while it raises a database error `worth` another try."""
    for i in range(attempts):
        try:
            return fn()
        except (DatabaseError, *TRANSIENT) as e:
            if not worth(e) or i == attempts - 1:
                raise
            time.sleep(pause(i))
    raise AssertionError("unreachable")


def retry_conflicts(fn: Callable[P, T]) -> Callable[P, T]:
    """Run the whole call again when the server made its transaction a deadlock's victim (rolled back, so
    nothing of it was written). Launchers, the service and users lock the same rows, and InnoDB's gap locks
    in particular meet in cycles now and then: a user's kill must not fail for that. For calls whose only
    effect is their one transaction."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return _again(lambda: fn(*args, **kwargs), CONFLICT_ATTEMPTS,
                      lambda e: isinstance(e, DatabaseError) and e.conflict,
                      lambda i: random.uniform(0.01, 0.05) * 2**i)  # apart, so the two do not meet again at once

    return run


def retry(fn: Callable[[], T], *, attempts: int = 30, delay: float = 0.5, max_delay: float = 5.0) -> T:
    """Run fn, retrying transient database errors (server restart, lock timeout) with backoff. A full disk, or
    anything else, is raised at once.

    Balsam sent a job to FAILED on any exception in a transition; a database hiccup is not the job's fault.
    """
    return _again(fn, attempts, lambda e: e.transient if isinstance(e, Fault) else not _FULL.search(str(e)),
                  lambda i: min(max_delay, delay * (2**i)))


def upgrade(eng: Engine) -> None:
    """Create or upgrade the schema to HEAD with Alembic."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def current_revision(conn: Connection) -> str | None:
    """The schema revision, or None for a database without sluice's tables (one query: the inspector's
    catalogue reads cost more than the rest of opening a workspace on PostgreSQL)."""
    try:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except sa_exc.ProgrammingError:
        conn.rollback()
        return None
    except sa_exc.OperationalError as e:  # SQLite says "no such table" as an OperationalError
        if "no such table" not in str(e):
            raise
        conn.rollback()
        return None


def connect(url: str) -> Engine:
    """The engine for url, after checking that the server answers and the schema is current.

    Every failure is one line: unreachable server or wrong password (never the password itself), a database
    that is not a sluice database, or one whose schema is older than this code.
    """
    eng = engine(url)
    try:
        with eng.connect() as conn:
            rev = current_revision(conn)
    except sa_exc.DBAPIError as e:
        raise DatabaseError(f"cannot open database {redact(url)}: {_short(e)}") from None
    if rev is None:
        raise UserError(
            f"database {redact(url)} has no sluice schema; run `sluice db upgrade` (or `sluice init`)"
        )
    if rev != HEAD:
        if rev < HEAD:
            raise SchemaOutOfDate(
                f"database schema is at revision {rev}, this sluice needs {HEAD}: run `sluice db upgrade`"
            )
        raise UserError(f"database schema {rev} is newer than this sluice ({HEAD}): upgrade sluice")
    if eng.dialect.name == "sqlite":  # one SQLite file shared by two hosts over NFS/Lustre/GPFS is refused
        fsinfo.check_sqlite(eng, eng.url.database)
    return eng


def _short(e: sa_exc.DBAPIError) -> str:
    """The driver's first line, without SQL or URLs (which could hold a password)."""
    msg = one_line(e.orig if e.orig is not None else e)
    return re.sub(r"password=\S+", "password=***", msg)


def marks(conn: Connection, n: int) -> str:
    """n driver placeholders, comma-separated ("?" for sqlite3, "%s" for psycopg and PyMySQL)."""
    m = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    return ", ".join([m] * n)


def raw(conn: Connection, sql: str, args: Sequence[Any] = (), *, fetch: bool = True,
        json_text: bool = False) -> list[tuple[Any, ...]]:
    """One statement on the driver's cursor, in the caller's transaction: for the launcher's hot path, where
    SQLAlchemy's per-statement work (compiling expanding IN lists) costs more than the database does.

    `json_text`: JSON columns come back as their text on every backend (psycopg would decode them), for a caller
    that decodes them itself."""
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if json_text and conn.dialect.driver == "psycopg":
        _json_as_text(cur)
    try:
        with _as_sqlalchemy(conn, sql, args):
            cur.execute(sql, tuple(args))
            return [tuple(r) for r in cur.fetchall()] if fetch else []
    finally:
        cur.close()


def _json_as_text(cur: Any) -> None:
    from psycopg.types.string import TextLoader

    for name in ("json", "jsonb"):
        cur.adapters.register_loader(name, TextLoader)


@contextmanager
def _as_sqlalchemy(conn: Connection, sql: str, args: Any) -> Iterator[None]:
    """The driver's own errors, raised on its cursor, as SQLAlchemy's (what write(), read() and retry() know):
    a deadlock or a lost server met in a raw statement escaped them as a psycopg or pymysql error, neither
    retried nor said in sluice's words."""
    try:
        yield
    except sa_exc.DBAPIError:
        raise
    except Exception as e:
        dbapi = conn.dialect.loaded_dbapi
        if not isinstance(e, dbapi.Error):
            raise
        raise sa_exc.DBAPIError.instance(sql, args, e, dbapi.Error, dialect=conn.dialect) from e


ARRAY_CHUNK = 100_000
"""Ids a PostgreSQL statement takes in its one array at most (a bound on the memory of one message)."""


def raw_in(conn: Connection, sql: str, ids: Sequence[Any], tail: str = "", chunk: int = 900, *,
           args: Sequence[Any] = (), fetch: bool = True, json_text: bool = False) -> list[tuple[Any, ...]]:
    """`sql` (ending in "IN") + "(ids...)" + `tail` through the driver, in chunks (SQLite's old 999-variable
    limit): big IN lists compiled by SQLAlchemy cost ~4 ms a statement, more than the query. `args` bind the
    marks in `sql` itself; `ids` are integers.

    On PostgreSQL the ids go as one array, `= ANY(%s::bigint[])`: a mark per id cost the driver ~6 us an id (it
    splits the query text in Python) and the server ~5 (parsing and binding), half that as an array; and the
    statement's text no longer changes with the number of ids, so psycopg prepares it once. `json_text` as raw's."""
    out: list[tuple[Any, ...]] = []
    if conn.dialect.name == "postgresql" and sql.endswith(" IN"):
        head = f"{sql[:-3]} = ANY(%s::bigint[]){tail}"
        for i in range(0, len(ids), ARRAY_CHUNK):
            out += raw(conn, head, [*args, list(ids[i : i + ARRAY_CHUNK])], fetch=fetch, json_text=json_text)
        return out
    for i in range(0, len(ids), chunk):
        part = list(ids[i : i + chunk])
        out += raw(conn, f"{sql} ({marks(conn, len(part))}){tail}", [*args, *part], fetch=fetch, json_text=json_text)
    return out


def allocate_ids(conn: Connection, table: str, n: int) -> list[int]:
    """n fresh primary keys for a bulk insert with explicit ids (no per-row RETURNING round trips).

    PostgreSQL draws them from the table's sequence. SQLite (inside BEGIN IMMEDIATE) and MariaDB/MySQL (the
    FOR UPDATE next-key lock on the index end) hold the write lock until commit, so max(id)+1.. is ours.
    """
    if n <= 0:
        return []
    if conn.dialect.name == "postgresql":
        q = text(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, :n)")
        return sorted(conn.execute(q, {"n": n}).scalars())
    lock = " FOR UPDATE" if conn.dialect.name != "sqlite" else ""
    top = conn.execute(text(f"SELECT COALESCE(MAX(id), 0) FROM {table}{lock}")).scalar() or 0
    return list(range(int(top) + 1, int(top) + 1 + n))


def bulk_insert(conn: Connection, table: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    """executemany on the raw driver cursor: 3-10x faster than the ORM/Core path for large batches.

    Values must already be driver-ready (JSON columns as str). Runs in the caller's transaction.
    """
    if not rows:
        return
    cols = ", ".join(columns)
    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg" and len(rows) >= 100:
        # COPY streams the rows in one command: ~3x executemany's speed for 100,000 jobs (bench/bench_add.py)
        copy = f"COPY {table} ({cols}) FROM STDIN"
        try:
            with _as_sqlalchemy(conn, copy, None), cur.copy(copy) as cp:
                for r in rows:
                    cp.write_row(r)
        finally:
            cur.close()
        return
    sql = f"INSERT INTO {table} ({cols}) VALUES ({marks(conn, len(columns))})"
    try:
        with _as_sqlalchemy(conn, sql, None):
            for i in range(0, len(rows), 10_000):
                cur.executemany(sql, rows[i : i + 10_000])
    finally:
        cur.close()
