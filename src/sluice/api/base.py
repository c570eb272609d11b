"""The base of the Workspace: a campaign's directory and database, and the transactions into it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self, TypeVar

from sqlalchemy import Connection, Engine

from sluice import config
from sluice.errors import DatabaseError, UserError, one_line
from sluice.states import default_actor
from sluice.store import db

T = TypeVar("T")


class WorkspaceBase:
    """A campaign: a directory with sluice.toml, data/, logs/, and the job database it names."""

    def __init__(self, cfg: config.Config, engine: Engine, actor: str | None = None) -> None:
        self.config = cfg
        self.path = cfg.path
        self.engine = engine
        self.actor = actor or default_actor()

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, actor: str | None = None) -> Self:
        """Open an existing workspace; the database must answer and its schema be current."""
        root = config.find_workspace(path)
        cfg = config.load(root)
        return cls(cfg, db.connect(cfg.db_url), actor)

    @classmethod
    def create(cls, path: str | os.PathLike[str], db_url: str | None = None, *,
               scheduler: str = "local") -> Self:
        """Make a new workspace at path (created if missing) and its schema."""
        root = Path(path).expanduser().resolve()
        if (root / config.CONFIG_NAME).exists():
            raise UserError(f"{root} is already a sluice workspace; use it, or pick another PATH")
        if root.exists() and not root.is_dir():
            raise UserError(f"{root} exists and is not a directory")
        url = db_url or config.default_db_url(root)
        made = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        eng = db.engine(config._resolve_sqlite(url, root))
        try:
            with eng.connect():
                pass
        except Exception as e:
            if made:
                root.rmdir()
            raise DatabaseError(f"cannot open database {db.redact(url)}: "
                                f"{one_line(getattr(e, 'orig', None) or e, 200)}") from None
        (root / "data").mkdir(exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        db.upgrade(eng)
        config.write_new(root, db_url, scheduler)
        return cls(config.load(root), eng)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite), for the API's own modules."""
        with db.write(self.engine) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a consistent snapshot), for the API's own modules."""
        with db.read(self.engine) as conn:
            yield conn

    def retry(self, fn: Callable[[], T], *, attempts: int = 30) -> T:
        """Run fn, retrying transient database faults with backoff (a server restart, a lock timeout); a full
        disk or any other fault is raised at once."""
        return db.retry(fn, attempts=attempts)

    def close(self) -> None:
        """Let go of pooled connections (a forked child opens its own)."""
        db.dispose_all()
