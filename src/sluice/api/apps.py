"""Registering and changing applications: command templates whose `{param}` placeholders jobs fill in."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from sluice.api import specs
from sluice.api.queries import Queries
from sluice.api.records import App
from sluice.errors import UserError
from sluice.schema import APP_SETTABLE
from sluice.store.db import retry_conflicts
from sluice.store.models import apps, jobs


class Apps(Queries):
    """Registering and changing the Workspace's apps."""

    @retry_conflicts
    def add_app(self, name: str, command: str, description: str = "", *,
                environment: Mapping[str, str] | None = None, preprocess: str | None = None,
                postprocess: str | None = None, error_handler: str | None = None,
                timeout_handler: str | None = None, on_error: str = "retry", on_timeout: str = "retry",
                shell: bool = False, preamble: str | None = None,
                machines: Mapping[str, Mapping[str, Any]] | None = None) -> App:
        """Register an application; its command's `{param}` placeholders are what jobs must fill.

        `preamble` is shell lines run before the command in the same shell (`module load`, `source env.sh`, a
        container wrapper); `machines` maps a machine name (`machine` in sluice.toml) to overrides of command,
        preamble and environment.
        """
        options = {"environment": dict(environment) if environment else None, "preprocess": preprocess,
                   "postprocess": postprocess, "error_handler": error_handler, "timeout_handler": timeout_handler,
                   "on_error": on_error, "on_timeout": on_timeout, "shell": shell, "preamble": preamble,
                   "machines": {k: dict(v) for k, v in machines.items()} if machines else None}
        specs.check_app(name, command, options)
        row = {"name": name, "command": command, "description": description, **options, "created_at": time.time()}
        with self.write() as conn:
            if conn.execute(select(apps.c.id).where(apps.c.name == name)).first():
                raise UserError(f"app {name!r} exists already; change it with `sluice app modify {name}`")
            conn.execute(insert(apps).values(**row))
        return self.app(name)

    @retry_conflicts
    def modify_app(self, name: str, **changes: Any) -> App:
        app = self.app(name)
        bad = sorted(set(changes) - set(APP_SETTABLE))
        if bad:
            raise UserError(f"cannot change app field(s) {', '.join(bad)}; fields: {', '.join(sorted(APP_SETTABLE))}")
        merged = {k: getattr(app, k) for k in APP_SETTABLE} | changes
        command = merged.pop("command")
        specs.check_app(None, command, merged)
        with self.write() as conn:
            conn.execute(update(apps).where(apps.c.id == app.id).values(**changes))
        return self.app(name)

    @retry_conflicts
    def remove_app(self, name: str) -> None:
        app = self.app(name)
        with self.write() as conn:
            n = conn.execute(select(func.count()).select_from(jobs).where(jobs.c.app_id == app.id)).scalar()
            if n:
                raise UserError(f"app {name!r} is used by {n} job(s); remove them first (`sluice rm --app {name}`)")
            conn.execute(delete(apps).where(apps.c.id == app.id))
