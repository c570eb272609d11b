"""The JSON API's shapes, as pydantic models: FastAPI validates the answers against them and publishes them
in the OpenAPI schema (`/openapi.json`, browsable at `/docs`), so a script can see every field's type."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from sluice.api.records import Event


class ErrorOut(BaseModel):
    """Every 4xx and 5xx answer: one line naming the problem (and the fix, when there is one)."""

    error: str = Field(examples=["unknown state 'DONE'; valid states: CREATED, AWAITING_PARENTS, ..."])


class SummaryOut(BaseModel):
    counts: dict[str, int] = Field(description="jobs per state, in the state machine's order; empty states left out")
    total: int
    workflow: str | None = None
    as_of: float = Field(description="when the counts were taken (unix seconds)")
    age_s: float = Field(description="how old the counts are: a snapshot is shared by every client")


class JobRowOut(BaseModel):
    id: int
    name: str
    workflow: str
    app: str
    state: str
    session_id: int | None = Field(description="the launcher session holding the job, if any")
    retry_count: int
    max_retries: int
    num_nodes: int
    updated_at: float
    state_message: str | None


class JobPageOut(BaseModel):
    jobs: list[JobRowOut]
    next: int | None = Field(description="pass as `after` for the next page; null on the last page")


EventOut = Event
"""A state change as the API answers it: the API's own record (a dataclass FastAPI publishes as is)."""


class RelativesOut(BaseModel):
    parents: list[JobRowOut]
    children: list[JobRowOut]
    n_parents: int
    n_children: int


class LogOut(BaseModel):
    path: str
    lines: list[str]
    size: int
    modified: float | None
    note: str | None = Field(description="why there are no lines (missing file, refused), if so")
    partial: bool = Field(description="true when older lines were left out")


class WorkflowsOut(BaseModel):
    workflows: list[str]


class GraphOut(BaseModel):
    workflow: str
    collapsed: bool = Field(description="true: one node per app (counts by state), edges counted between apps")
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]
    outside: int = Field(description="edges to or from jobs of other workflows")
    as_of: float


class ActionOut(BaseModel):
    ok: bool = True
    job: int
    state: str
    affected: list[int] = Field(default_factory=list)
