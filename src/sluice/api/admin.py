"""Looking after a workspace's database: where it is, its schema revision, and upgrading it."""

from __future__ import annotations

from dataclasses import dataclass

from sluice import config
from sluice.errors import UserError, one_line
from sluice.store import db


@dataclass(frozen=True)
class SchemaStatus:
    url: str
    """The database URL without its password."""
    revision: str | None
    """The schema revision the database is at (None: no sluice schema)."""
    head: str = db.HEAD
    """The revision this sluice needs."""

    @property
    def current(self) -> bool:
        return self.revision == self.head


def status(workspace: str | None) -> SchemaStatus:
    cfg = config.load(config.find_workspace(workspace))
    with db.engine(cfg.db_url).connect() as conn:
        return SchemaStatus(db.redact(cfg.db_url), db.current_revision(conn))


def upgrade(workspace: str | None) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring the schema to this sluice's revision (safe to repeat); the status before and after."""
    cfg = config.load(config.find_workspace(workspace))
    before = status(workspace)
    try:
        db.upgrade(db.engine(cfg.db_url))
    except Exception as e:
        if not type(e).__module__.startswith("alembic"):
            raise
        raise UserError(f"cannot upgrade database {before.url} from revision {before.revision}: "
                        f"{one_line(e)}") from None
    return before, status(workspace)


def redact(url: str) -> str:
    """A database URL without its password, for messages."""
    return db.redact(url)


def forget_connections() -> None:
    """Drop pooled connections: a forked child must open its own."""
    db.dispose_all()
