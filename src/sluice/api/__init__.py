"""The Python API: the one door to a workspace's database. The CLI, the launcher, the service, reports and the
dashboard call this; only this package imports the store (sluice.store).

Imported lazily, so that `import sluice.api.fast` (the CLI's quick reads) does not pay for SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["App", "Event", "Job", "Workspace", "current_job", "job_path", "spawn_child"]

if TYPE_CHECKING:
    from sluice.api.records import App, Event, Job, job_path
    from sluice.api.workspace import Workspace, current_job, spawn_child

_WHERE = {"App": "records", "Event": "records", "Job": "records", "job_path": "records", "Workspace": "workspace",
          "current_job": "workspace", "spawn_child": "workspace"}


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'sluice.api' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"sluice.api.{mod}"), name)
