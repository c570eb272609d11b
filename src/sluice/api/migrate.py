"""Moving a workspace's SQLite database into PostgreSQL or MariaDB (`sluice db migrate-to URL`), and the
schema and settings work a database server needs (`sluice dbserver start`).

The move loses nothing and can be repeated after a failure: every table of the schema is copied with its ids,
in batches on the driver's fast path (COPY on PostgreSQL, executemany elsewhere), inside one transaction on
the target, while the SQLite write lock keeps launchers and users from changing the source. Only when the
target's counts and id sums match the source does sluice.toml name the new URL; the SQLite file is then renamed
`sluice.db.migrated-<date>`, never deleted. It refuses while a launcher runs (its writes would go to the old
file) and when the target already holds sluice data (a second migration would mix two campaigns).
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Connection, Engine, Table, func, select, text
from sqlalchemy.engine import make_url

from sluice import config
from sluice.errors import DatabaseError, UserError, one_line
from sluice.store import db
from sluice.store.models import launcher_sessions as ls
from sluice.store.models import metadata

BATCH = 10_000
"""Rows per executemany/COPY: big enough to amortise the round trip, small enough to bound memory."""
LIVE_S = 60.0
"""A launcher session whose heartbeat is younger than this is running (the launchers' own staleness limit)."""
SERVERS = ("postgresql", "mysql", "mariadb")


@dataclass
class Moved:
    """What a migration did."""

    source: str
    target: str
    counts: dict[str, int] = field(default_factory=dict)
    kept_as: Path | None = None
    seconds: float = 0.0


def tables() -> list[Table]:
    """Every table of the schema, parents before children (foreign keys hold at every insert)."""
    return list(metadata.sorted_tables)


def _backend(url: str) -> str:
    try:
        return make_url(url).get_backend_name()
    except Exception:
        raise UserError(f"bad database URL {db.redact(url)!r}; expected e.g. "
                        "postgresql+psycopg://user@host/db or mysql+pymysql://user@host/db") from None


def counts(url: str) -> dict[str, int]:
    """Rows per table of the sluice database at url; empty when it has no sluice schema (or, for SQLite, no
    file: asking must not create one)."""
    if _backend(url) == "sqlite":
        path = make_url(url).database
        if not path or not Path(path).exists():
            return {}
    eng = db.engine(url)
    with db.read(eng) as conn:
        if db.current_revision(conn) is None:
            return {}
        return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar() or 0) for t in tables()}


def create_schema(url: str) -> None:
    """Create (or bring up to date) sluice's schema at url: what a fresh database server needs."""
    try:
        db.upgrade(db.engine(url))
    except Exception as e:
        if not type(e).__module__.startswith(("alembic", "sqlalchemy")):
            raise
        raise DatabaseError(f"cannot create the sluice schema in {db.redact(url)}: {one_line(e)}") from None


def _fingerprint(conn: Connection, t: Table) -> tuple[int, ...]:
    """Row count and the sum of each primary-key column: equal on both sides means the same rows, same ids."""
    keys = [func.coalesce(func.sum(c), 0) for c in t.primary_key.columns]
    row = conn.execute(select(func.count(), *keys).select_from(t)).one()
    return tuple(int(v) for v in row)


def _live_sessions(conn: Connection, now: float) -> list[Any]:
    """Sessions not ended whose heartbeat is fresh, less those of this host whose process is gone."""
    rows = conn.execute(select(ls.c.id, ls.c.host, ls.c.pid, ls.c.heartbeat_at)
                        .where(ls.c.ended_at.is_(None), ls.c.heartbeat_at > now - LIVE_S)).all()
    return [r for r in rows if r.host != socket.gethostname() or _alive(int(r.pid))]


def _refuse_live(conn: Connection) -> None:
    live = _live_sessions(conn, time.time())
    if live:
        r = live[0]
        raise UserError(f"launcher session {r.id} on {r.host} (pid {r.pid}) is running (heartbeat "
                        f"{time.time() - r.heartbeat_at:.0f} s ago); let it finish or stop it, then migrate")


def refuse_if_running(url: str) -> None:
    """A UserError if a launcher is running on the SQLite database at url (a move would lose its writes)."""
    with db.read(_source(url)) as conn:
        _refuse_live(conn)


def _source(url: str) -> Engine:
    """The SQLite engine, its schema current. Not db.connect(): its shared-file-system refusal would send the
    user to `sluice dbserver start --migrate`, which is this very move, and which refuses live launchers itself."""
    eng = db.engine(url)
    with db.read(eng) as conn:
        rev = db.current_revision(conn)
    if rev != db.HEAD:
        raise UserError(f"the workspace's database is at schema {rev or 'none'}, this sluice needs {db.HEAD}: "
                        "run `sluice db upgrade` first")
    return eng


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_target(url: str) -> None:
    """The target must answer, and hold no sluice data; its schema is created when missing."""
    backend = _backend(url)
    if backend not in SERVERS:
        raise UserError(f"cannot migrate into {db.redact(url)}: the target must be PostgreSQL or MariaDB/MySQL "
                        "(postgresql+psycopg://... or mysql+pymysql://...)")
    eng = db.engine(url)
    try:
        with eng.connect() as conn:
            rev = db.current_revision(conn)
    except Exception as e:
        if not type(e).__module__.startswith("sqlalchemy"):
            raise
        raise DatabaseError(f"cannot open database {db.redact(url)}: {one_line(getattr(e, 'orig', None) or e)}"
                            ) from None
    if rev is None:
        create_schema(url)
    elif rev != db.HEAD:
        raise UserError(f"target database {db.redact(url)} has sluice schema {rev}, this sluice needs {db.HEAD}: "
                        "migrate into an empty database")
    held = {k: v for k, v in counts(url).items() if v}
    if held:
        what = ", ".join(f"{v} {k}" for k, v in held.items())
        raise UserError(f"target database {db.redact(url)} already holds sluice data ({what}); "
                        "migrate into an empty database")


def _converters(t: Table) -> list[Callable[[Any], Any]]:
    """SQLite hands back booleans as 0/1; the servers' boolean columns want bools. JSON is text on both."""
    return [(lambda v: None if v is None else bool(v)) if isinstance(c.type, Boolean) else (lambda v: v)
            for c in t.columns]


def _copy_table(src: Connection, dst: Connection, t: Table, batch: int,
                progress: Callable[[int], None] | None = None) -> None:
    cols = [c.name for c in t.columns]
    order = ", ".join(c.name for c in t.primary_key.columns)
    conv = _converters(t)
    plain = all(not isinstance(c.type, Boolean) for c in t.columns)
    cur = src.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(f"SELECT {', '.join(cols)} FROM {t.name} ORDER BY {order}")
        while rows := cur.fetchmany(batch):
            out = rows if plain else [tuple(f(v) for f, v in zip(conv, r, strict=True)) for r in rows]
            db.bulk_insert(dst, t.name, cols, out)
            if progress is not None:
                progress(len(rows))
    finally:
        cur.close()
    if dst.dialect.name == "postgresql" and "id" in t.c:  # the next id drawn must be past every copied one
        dst.execute(text(f"SELECT setval(pg_get_serial_sequence('{t.name}', 'id'), "
                         f"COALESCE((SELECT MAX(id) FROM {t.name}), 0) + 1, false)"))


def migrate(workspace: str | os.PathLike[str] | None, target_url: str, *, batch: int = BATCH,
            progress: Callable[[int], Callable[[int], None]] | None = None) -> Moved:
    """Move the workspace's SQLite database into the server at target_url, then point sluice.toml there.
    `progress(total_rows)` may return a function told how many more rows are copied (the CLI's bar).

    Nothing changes on a refusal or a failure, except an empty sluice schema the target may have gained.
    """
    t0 = time.monotonic()
    root = config.find_workspace(workspace)
    src_url = config.load(root).db_url
    if _backend(src_url) != "sqlite":
        raise UserError(f"workspace {root} already uses {db.redact(src_url)}; `sluice db migrate-to` moves an "
                        "SQLite workspace")
    src = _source(src_url)
    toml = _with_url(root, target_url)  # a sluice.toml that cannot take the new URL fails before the copy
    _check_target(target_url)
    moved = Moved(db.redact(src_url), db.redact(target_url))
    with db.write(src) as sconn:  # BEGIN IMMEDIATE: no writer gets in until the move is over
        _refuse_live(sconn)
        want = {t.name: _fingerprint(sconn, t) for t in tables()}
        step = progress(sum(v[0] for v in want.values())) if progress is not None else None
        with db.write(db.engine(target_url)) as dconn:
            for t in tables():
                _copy_table(sconn, dconn, t, batch, step)
            got = {t.name: _fingerprint(dconn, t) for t in tables()}
            if got != want:
                raise DatabaseError(f"copy into {moved.target} does not match the source ({_diff(want, got)}); "
                                    "nothing was committed, the workspace still uses SQLite")
        with db.read(db.engine(target_url)) as vconn:  # what is durable, read back on a new transaction
            after = {t.name: _fingerprint(vconn, t) for t in tables()}
        if after != want:
            raise DatabaseError(f"{moved.target} does not hold what was copied ({_diff(want, after)}); the "
                                "workspace still uses SQLite: empty the target and migrate again")
        _write(root / config.CONFIG_NAME, toml)
    moved.counts = {k: v[0] for k, v in want.items()}
    src.dispose()
    moved.kept_as = _retire(Path(str(src.url.database)))
    moved.seconds = time.monotonic() - t0
    return moved


def _diff(want: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]]) -> str:
    return "; ".join(f"{k}: {want[k][0]} rows, got {got.get(k, (0,))[0]}" for k in want if want[k] != got.get(k))


def _retire(path: Path) -> Path:
    """Rename the SQLite file (and its WAL, emptied first) out of the way; it is kept, never deleted."""
    try:
        c = sqlite3.connect(path, isolation_level=None)
        try:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            c.close()
    except sqlite3.Error:
        pass  # a reader holds it: the WAL is renamed with it below, so the pair stays whole
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = path.with_name(f"{path.name}.migrated-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.migrated-{stamp}-{n}")
    path.rename(dest)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(dest.with_name(dest.name + suffix))
    return dest


_URL_LINE = re.compile(r"^[ \t]*url[ \t]*=.*$", re.M)
_SECTION = re.compile(r"^[ \t]*\[([^\]\n]+)\][ \t]*(#.*)?$", re.M)


def set_database_url(root: Path, url: str) -> None:
    """Point sluice.toml's [database] url at url, keeping every other line (comments included) as it was."""
    _write(root / config.CONFIG_NAME, _with_url(root, url))


def _with_url(root: Path, url: str) -> str:
    """sluice.toml's text with [database] url = url (the section is added when missing); checked by parsing."""
    f = root / config.CONFIG_NAME
    old = f.read_text()
    line = f"url = {_toml_string(url)}"
    heads = list(_SECTION.finditer(old))
    at = next((i for i, m in enumerate(heads) if m.group(1).strip() == "database"), None)
    if at is None:
        new = old.rstrip("\n") + f"\n\n[database]\n{line}\n"
    else:
        start = heads[at].end()
        end = heads[at + 1].start() if at + 1 < len(heads) else len(old)
        body = old[start:end]
        body = _URL_LINE.sub(lambda _m: line, body, count=1) if _URL_LINE.search(body) else f"\n{line}" + body
        new = old[:start] + body + old[end:]
    try:
        ok = tomllib.loads(new).get("database", {}).get("url") == url
    except tomllib.TOMLDecodeError:
        ok = False
    if not ok:
        raise UserError(f"{f}: cannot set [database] url; fix the file, or set url = {_toml_string(url)} in it")
    return new


def _write(f: Path, content: str) -> None:
    """Write a temporary file and rename it over f: a crash leaves the old file or the new one, never half."""
    tmp = f.with_name(f".{f.name}.tmp")
    tmp.write_text(content)
    os.replace(tmp, f)


def _toml_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
