"""The tables, as SQLAlchemy Core: the ORM is never imported, so `sluice ls` and job start-up stay quick.

Parents are a real edge table indexed both ways (Balsam's JSON-text parents cost O(N) a lookup). Times are unix
epoch seconds as doubles: cheap to write in the launcher's hot loop, the same on every backend, and what reports
compute with. Indexes cost every state write (the launcher's hot path): only `state` has one that a state
change touches; workflow and name lookups filter the rest; `session_id` has none, since finding a session's
jobs is a rare recovery scan and claiming must not pay for it. The claim reads partial indexes of the runnable
jobs nobody holds (ix_jobs_claim_<state>, see CLAIMABLE).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from sluice import schema

# BIGINT ids on the servers; INTEGER on SQLite so the id is the rowid (fast, autoincrementing).
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON(none_as_null=True)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


def _pk() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


def _columns(cols: tuple[schema.Col, ...], **extra: Any) -> list[Column[Any]]:
    """Columns from the record's declaration (sluice/schema.py); `extra` adds keyword arguments per column."""
    out: list[Column[Any]] = []
    for c in cols:
        if c.name == "id":
            out.append(_pk())
            continue
        kw: dict[str, Any] = {"nullable": c.null, **extra.get(c.name, {})}
        if not c.null and c.default is not None:
            kw["default"] = c.default
        args: list[Any] = [c.name, _KINDS[c.kind](c.size)]
        fk = kw.pop("fk", None)
        if fk:
            args.append(ForeignKey(fk))
        out.append(Column(*args, **kw))
    return out


_KINDS: dict[str, Any] = {
    "id": lambda _n: Id, "str": String, "text": lambda _n: Text, "int": lambda _n: Integer,
    "float": lambda _n: Double, "bool": lambda _n: Boolean, "json": lambda _n: Json,
}

def _partial_ok(ddl: Any, target: Any, bind: Any, tables: Any = None, state: Any = None, *, dialect: Any,
                compiler: Any = None, checkfirst: bool) -> bool:
    """Partial indexes exist on SQLite and PostgreSQL only."""
    return getattr(dialect, "name", None) in ("sqlite", "postgresql")


CLAIMABLE = ("PREPROCESSED", "RESTART_READY")
"""The runnable states (sluice.states.RUNNABLE); each has a partial index of its jobs that no launcher holds,
ix_jobs_claim_<state> on id. The claim reads only these, where through (state, id) it also walked every row
other launchers had claimed and not started (16 launchers: ~15 rows skipped per row taken). An entry goes when
its job is claimed and comes back only if it is given back or retried: the launcher's other writes never touch
them. MariaDB has no partial indexes, and claims there through (state, id)."""


WORKABLE = ("POSTPROCESSED", "PREPROCESSED", "READY", "RESTART_READY", "RUN_DONE", "RUN_ERROR", "RUN_TIMEOUT",
            "STAGED_IN")
"""sluice.states.RUNNABLE | PROCESSABLE, sorted (tests/test_structure.py keeps them equal): the jobs a launcher
could take, which the service sizes its batch jobs by."""
WORK_SQL = "session_id IS NULL AND state IN (" + ", ".join(f"'{s}'" for s in WORKABLE) + ")"
"""The predicate of ix_jobs_work; the service's query says it word for word, so SQLite can use the index."""


def claimable_sql(state: str) -> str:
    """The predicate of ix_jobs_claim_<state>; a query must say it word for word for SQLite to use the index."""
    return f"session_id IS NULL AND state = '{state}'"


apps = Table("apps", metadata, *_columns(schema.APP_COLUMNS, name={"unique": True}))
"""An application: a command template whose `{param}` placeholders jobs fill in."""

jobs = Table(
    "jobs", metadata,
    *_columns(schema.JOB_COLUMNS, app_id={"fk": "apps.id"}),
    Index("ix_jobs_state_id", "state", "id"),
    Index("ix_jobs_urgent", "state", "priority", "id", sqlite_where=text(schema.URGENT_SQL),
          postgresql_where=text(schema.URGENT_SQL)),
    Index("ix_jobs_workflow", "workflow"),
    Index("ix_jobs_name", "name"),
    *(Index(f"ix_jobs_claim_{st.lower()}", "id", sqlite_where=text(claimable_sql(st)),
            postgresql_where=text(claimable_sql(st))).ddl_if(callable_=_partial_ok) for st in CLAIMABLE),
    # the service's demand, by job shape, read from the index alone: 2 of 10,000,000 jobs runnable took 2 s
    Index("ix_jobs_work", "queue", "num_nodes", "ranks_per_node", "threads_per_rank", "state", "session_id",
          sqlite_where=text(WORK_SQL),
          postgresql_where=text(WORK_SQL)).ddl_if(callable_=_partial_ok),
)
"""One task of the campaign (fields: sluice.schema.JobRow)."""

job_parents = Table(
    "job_parents", metadata,
    Column("parent_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("child_id", Id, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Index("ix_job_parents_child_parent", "child_id", "parent_id"),
)
"""A dependency edge: child runs only after parent finished."""

events = Table(
    "events", metadata,
    _pk(),
    Column("job_id", Id, nullable=False),
    Column("from_state", String(20)),
    Column("to_state", String(20), nullable=False),
    Column("timestamp", Double, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("message", Text),
    Column("data", Json),
    Index("ix_events_job_id", "job_id", "id"),
)
"""Append-only provenance: one row per state transition, never updated."""

batch_jobs = Table(
    "batch_jobs", metadata,
    _pk(),
    Column("scheduler", String(16), nullable=False),
    Column("native_id", String(128)),
    Column("queue", String(64)),
    Column("project", String(128)),
    Column("num_nodes", Integer, nullable=False),
    Column("wall_time_min", Double, nullable=False),
    Column("job_mode", String(16), nullable=False, default="serial"),
    Column("state", String(16), nullable=False),
    Column("message", Text),
    Column("filters", Json),
    Column("workdir", String(1024)),
    Column("submitted_at", Double),
    Column("started_at", Double),
    Column("ended_at", Double),
    Index("ix_batch_jobs_state", "state"),
)
"""A launcher job we submitted to the batch scheduler, and what became of it."""

launcher_sessions = Table(
    "launcher_sessions", metadata,
    _pk(),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("batch_job_id", Id),
    Column("job_mode", String(16), nullable=False, default="serial"),
    Column("started_at", Double, nullable=False),
    Column("heartbeat_at", Double, nullable=False),
    Column("ended_at", Double),
    Column("info", Json),
)
"""A running launcher: it heartbeats; when the heartbeat goes stale its RUNNING jobs are recovered."""
