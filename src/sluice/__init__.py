"""sluice: a workflow manager for HPC campaigns.

Jobs live in a database; a service keeps the batch queue fed within its limits; a launcher packs many jobs
into each allocation. The Python API reads aloud::

    import sluice
    ws = sluice.Workspace.open("~/campaign")
    ws.add_app("sim", "simulate --temp {temp}")
    job = ws.add_job("t300", app="sim", params={"temp": 300}, workflow="scan")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sluice.version import __version__

__all__ = ["Workspace", "Job", "App", "Event", "UserError", "current_job", "spawn_child", "__version__"]

if TYPE_CHECKING:
    from sluice.api import App, Event, Job, Workspace, current_job, spawn_child
    from sluice.errors import UserError


def __getattr__(name: str) -> Any:
    """Import the API lazily: `sluice --help` and job start-up should not pay for SQLAlchemy twice."""
    if name == "UserError":
        from sluice import errors

        return errors.UserError
    if name in __all__:
        from sluice import api

        return getattr(api, name)
    raise AttributeError(f"module 'sluice' has no attribute {name!r}")
