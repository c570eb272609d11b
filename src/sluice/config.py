"""Workspace settings (`sluice.toml`) and where the database is.

A workspace is a directory holding `sluice.toml`, `data/` (job working directories) and `logs/`. Commands find
it as git finds a repository: `--workspace`, then `SLUICE_WORKSPACE`, then the current directory and its parents.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sluice import environ
from sluice.errors import UserError, WorkspaceNotFound

CONFIG_NAME = "sluice.toml"
ENV_WORKSPACE = environ.WORKSPACE
ENV_DB_URL = environ.DB_URL
SCHEMA_HEAD = "0004"
"""The newest migration in sluice/migrations/versions; a test keeps the two in step."""


@dataclass(frozen=True)
class QueuePolicy:
    """What the site lets one user have in one queue; the service never goes past it."""

    name: str
    max_queued: int = 20
    max_running: int = 20
    min_nodes: int = 1
    max_nodes: int = 128
    min_wall_min: int = 10
    max_wall_min: int = 360
    project: str | None = None
    job_mode: str = "serial"
    extra: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransferPolicy:
    """How data moves (`[transfers]` in sluice.toml)."""

    where: str = "launcher"
    """`launcher`: launchers stage their jobs in; `service`: the service does it on the login node (compute
    nodes without network), and launchers claim only jobs whose data is in place."""
    concurrency: int = 4
    """Transfer batches (one per endpoint pair) running at once."""
    attempts: int = 5
    """Tries of a batch that fails for a reason a retry can help (network, a busy remote)."""
    backoff_s: float = 2.0
    """The wait before the second try; it doubles each time."""


@dataclass(frozen=True)
class Config:
    """Everything read from sluice.toml, with defaults for what it leaves out."""

    path: Path
    db_url: str
    scheduler: str = "local"
    service_period: float = 10.0
    queues: dict[str, QueuePolicy] = field(default_factory=dict)
    launcher: dict[str, Any] = field(default_factory=dict)
    machine: str | None = None
    transfers: TransferPolicy = field(default_factory=TransferPolicy)

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"


def default_db_url(path: Path) -> str:
    return f"sqlite:///{path / 'sluice.db'}"


def find_workspace(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The workspace directory: explicit path, $SLUICE_WORKSPACE, or the nearest parent with sluice.toml."""
    given = explicit if explicit is not None else os.environ.get(ENV_WORKSPACE)
    if given:
        p = Path(given).expanduser().resolve()
        if not (p / CONFIG_NAME).is_file():
            raise WorkspaceNotFound(
                f"{p} is not a sluice workspace (no {CONFIG_NAME}); create one with `sluice init {given}`"
            )
        return p
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / CONFIG_NAME).is_file():
            return d
    raise WorkspaceNotFound(
        "no sluice workspace here or in any parent directory; "
        "run `sluice init PATH`, or pass --workspace PATH / set SLUICE_WORKSPACE"
    )


def load(path: Path) -> Config:
    """Read sluice.toml; a malformed file is a user error naming the line."""
    f = path / CONFIG_NAME
    try:
        raw = tomllib.loads(f.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{f}: {e}; fix the file and try again") from None
    db = raw.get("database", {})
    url = os.environ.get(ENV_DB_URL) or db.get("url") or default_db_url(path)
    url = _resolve_sqlite(url, path)
    svc = raw.get("service", {})
    queues = {}
    for name, q in raw.get("queues", {}).items():
        try:
            extra = tuple(q.pop("extra", ()))
            queues[name] = QueuePolicy(name=name, extra=extra, **q)
        except TypeError as e:
            raise UserError(f"{f}: [queues.{name}]: {e}; see `sluice service --help`") from None
    try:
        transfers = TransferPolicy(**raw.get("transfers", {}))
    except TypeError as e:
        raise UserError(f"{f}: [transfers]: {e}; keys: where, concurrency, attempts, backoff_s") from None
    if transfers.where not in ("launcher", "service"):
        raise UserError(f"{f}: [transfers] where must be \"launcher\" or \"service\", got {transfers.where!r}")
    if transfers.concurrency < 1 or transfers.attempts < 1:
        raise UserError(f"{f}: [transfers] concurrency and attempts must be at least 1")
    return Config(
        path=path,
        db_url=url,
        scheduler=svc.get("scheduler", "local"),
        service_period=float(svc.get("period", 10.0)),
        queues=queues,
        launcher=raw.get("launcher", {}),
        machine=raw.get("machine"),
        transfers=transfers,
    )


def _resolve_sqlite(url: str, path: Path) -> str:
    """A relative SQLite path in sluice.toml is relative to the workspace, not to the caller's cwd."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        return prefix + str(path / url[len(prefix) :])
    return url


TEMPLATE = """\
# sluice workspace settings. Every key is optional; the values shown are the defaults.

[database]
url = "{url}"
# PostgreSQL: url = "postgresql+psycopg://user@host:5432/dbname"
# MariaDB/MySQL: url = "mysql+pymysql://user:password@host:3306/dbname"

[service]
scheduler = "{scheduler}"   # local | slurm | pbs | cobalt | lsf
period = 10                  # seconds between passes of `sluice service`

# One table per batch queue the service may submit launcher jobs to, e.g.:
# [queues.debug]
# max_queued = 20      # never more than this many of our batch jobs waiting
# max_running = 20
# min_nodes = 1
# max_nodes = 128
# min_wall_min = 10
# max_wall_min = 360
# project = "MyAllocation"
# job_mode = "serial"   # or "mpi"

[launcher]
# idle_timeout = 10     # seconds without runnable work before a launcher exits

[transfers]
# where = "launcher"    # or "service": stage-in on the login node when compute nodes have no network
# concurrency = 4       # transfer batches (one per endpoint pair) at once
# attempts = 5          # tries of a batch that fails for a reason a retry can help
# backoff_s = 2.0       # wait before the second try, doubling
"""


def write_new(path: Path, db_url: str | None, scheduler: str = "local") -> None:
    """Write a fresh sluice.toml; the default database is the embedded SQLite file in the workspace."""
    url = db_url or "sqlite:///sluice.db"
    (path / CONFIG_NAME).write_text(TEMPLATE.format(url=url, scheduler=scheduler))
