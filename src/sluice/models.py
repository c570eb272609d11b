"""The tables. Parents are a real edge table indexed both ways (Balsam's JSON-text parents cost O(N) a lookup).

Times are unix epoch seconds as doubles: cheap to write in the launcher's hot loop, the same on every backend,
and what reports compute with.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT ids on the servers; INTEGER on SQLite so the id is the rowid (fast, autoincrementing).
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON(none_as_null=True)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class App(Base):
    """An application: a command template whose `{param}` placeholders jobs fill in."""

    __tablename__ = "apps"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    command: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    environment: Mapped[dict[str, str] | None] = mapped_column(Json)
    preprocess: Mapped[str | None] = mapped_column(Text)
    postprocess: Mapped[str | None] = mapped_column(Text)
    error_handler: Mapped[str | None] = mapped_column(Text)
    timeout_handler: Mapped[str | None] = mapped_column(Text)
    on_error: Mapped[str] = mapped_column(String(16), default="retry")
    on_timeout: Mapped[str] = mapped_column(String(16), default="retry")
    shell: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Double)


class Job(Base):
    """One task of the campaign. `workdir` is NULL for the default `data/<workflow>/<name>_<id>`."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    workflow: Mapped[str] = mapped_column(String(255), default="default")
    app_id: Mapped[int] = mapped_column(Id, ForeignKey("apps.id"))
    params: Mapped[dict[str, Any] | None] = mapped_column(Json)
    args: Mapped[list[str] | None] = mapped_column(Json)
    workdir: Mapped[str | None] = mapped_column(String(1024))
    num_nodes: Mapped[int] = mapped_column(Integer, default=1)
    ranks_per_node: Mapped[int] = mapped_column(Integer, default=1)
    threads_per_rank: Mapped[int] = mapped_column(Integer, default=1)
    gpus_per_rank: Mapped[int] = mapped_column(Integer, default=0)
    wall_time_min: Mapped[float | None] = mapped_column(Double)
    environment: Mapped[dict[str, str] | None] = mapped_column(Json)
    tags: Mapped[dict[str, str] | None] = mapped_column(Json)
    data: Mapped[Any] = mapped_column(Json, nullable=True)
    stage_in: Mapped[list[Any] | None] = mapped_column(Json)
    stage_out: Mapped[list[Any] | None] = mapped_column(Json)
    max_retries: Mapped[int] = mapped_column(Integer, default=3)
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(20))
    state_message: Mapped[str | None] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(String(64))
    machine: Mapped[str | None] = mapped_column(String(64))
    session_id: Mapped[int | None] = mapped_column(Id)
    created_at: Mapped[float] = mapped_column(Double)
    updated_at: Mapped[float] = mapped_column(Double)

    __table_args__ = (
        Index("ix_jobs_state_id", "state", "id"),
        Index("ix_jobs_workflow_state", "workflow", "state"),
        Index("ix_jobs_name", "name"),
        Index("ix_jobs_session_id", "session_id"),
    )


class JobParent(Base):
    """A dependency edge: child runs only after parent finished."""

    __tablename__ = "job_parents"
    parent_id: Mapped[int] = mapped_column(Id, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    child_id: Mapped[int] = mapped_column(Id, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    __table_args__ = (Index("ix_job_parents_child_parent", "child_id", "parent_id"),)


class Event(Base):
    """Append-only provenance: one row per state transition, never updated."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(Id)
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    timestamp: Mapped[float] = mapped_column(Double)
    actor: Mapped[str] = mapped_column(String(255))
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[Any] = mapped_column(Json, nullable=True)
    __table_args__ = (
        Index("ix_events_job_id", "job_id", "id"),
        Index("ix_events_to_state_timestamp", "to_state", "timestamp"),
    )


class BatchJob(Base):
    """A launcher job we submitted to the batch scheduler, and what became of it."""

    __tablename__ = "batch_jobs"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    scheduler: Mapped[str] = mapped_column(String(16))
    native_id: Mapped[str | None] = mapped_column(String(128))
    queue: Mapped[str | None] = mapped_column(String(64))
    project: Mapped[str | None] = mapped_column(String(128))
    num_nodes: Mapped[int] = mapped_column(Integer)
    wall_time_min: Mapped[float] = mapped_column(Double)
    job_mode: Mapped[str] = mapped_column(String(16), default="serial")
    state: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    filters: Mapped[dict[str, Any] | None] = mapped_column(Json)
    workdir: Mapped[str | None] = mapped_column(String(1024))
    submitted_at: Mapped[float | None] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double)
    __table_args__ = (Index("ix_batch_jobs_state", "state"),)


class LauncherSession(Base):
    """A running launcher: it heartbeats; when the heartbeat goes stale its RUNNING jobs are recovered."""

    __tablename__ = "launcher_sessions"
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    batch_job_id: Mapped[int | None] = mapped_column(Id)
    job_mode: Mapped[str] = mapped_column(String(16), default="serial")
    started_at: Mapped[float] = mapped_column(Double)
    heartbeat_at: Mapped[float] = mapped_column(Double)
    ended_at: Mapped[float | None] = mapped_column(Double)
    info: Mapped[dict[str, Any] | None] = mapped_column(Json)


jobs = cast(Table, Job.__table__)
apps = cast(Table, App.__table__)
job_parents = cast(Table, JobParent.__table__)
events = cast(Table, Event.__table__)
batch_jobs = cast(Table, BatchJob.__table__)
launcher_sessions = cast(Table, LauncherSession.__table__)
