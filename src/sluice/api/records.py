"""What the API hands out: App, Job and Event records (snapshots of rows), and where a job's files live."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice import templates
from sluice.schema import JSON_EMPTY, AppRow, JobRow

if TYPE_CHECKING:
    from sluice.api.queries import Queries


@dataclass(kw_only=True, frozen=True)
class App(AppRow):
    """A registered application (fields: sluice.schema.AppRow)."""

    @property
    def parameters(self) -> list[str]:
        """The `{param}` placeholders that every job of this app must fill."""
        return sorted(templates.fields(self.command))


@dataclass(frozen=True)
class Event:
    """One step of a job's provenance: append-only, never updated."""

    id: int
    job_id: int
    from_state: str | None
    to_state: str
    timestamp: float
    actor: str
    message: str | None
    data: Any


@dataclass(kw_only=True)
class Job(JobRow):
    """A snapshot of one job's row; `.parents`, `.children` and `.history` query the database when read."""

    app: str = ""
    _ws: Queries | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path:
        """The working directory: the job's own, or data/<workflow>/<name>_<id> in the workspace."""
        assert self._ws is not None
        return job_path(self._ws.config.data_dir, self.workdir, self.workflow, self.name, self.id)

    @property
    def parents(self) -> list[Job]:
        assert self._ws is not None
        return self._ws.parents(self.id)

    @property
    def children(self) -> list[Job]:
        assert self._ws is not None
        return self._ws.children(self.id)

    @property
    def history(self) -> list[Event]:
        assert self._ws is not None
        return self._ws.history(self.id)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        if self._ws is not None:
            d["path"] = str(self.path)
        return d


def job_path(data_dir: Path, workdir: str | None, workflow: str, name: str, job_id: int) -> Path:
    """A job's working directory: its own `workdir` (relative to data/), or data/<workflow>/<name>_<id>."""
    if workdir:
        p = Path(workdir)
        return p if p.is_absolute() else data_dir / p
    return data_dir / workflow / f"{name}_{job_id}"


def job_from_row(row: Any, ws: Queries | None) -> Job:
    d = dict(row._mapping)
    for k, make in JSON_EMPTY.items():
        if d.get(k) is None:
            d[k] = make()
    return Job(**d, _ws=ws)


def app_from_row(row: Any) -> App:
    return App(**dict(row._mapping))
