"""`sluice init` (a new workspace) and `sluice db upgrade` (bring its schema up to date)."""

from __future__ import annotations

import click

from sluice.cli.common import CONTEXT, workspace_arg
from sluice.cli.dbserver import migrate_to

SCHEDULERS = ("local", "slurm", "pbs", "cobalt", "lsf")


@click.command(context_settings=CONTEXT, epilog="Example: sluice init ~/campaign --scheduler slurm")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--db", "db_url", metavar="URL",
              help="Database URL (default: an SQLite file in the workspace), e.g. postgresql+psycopg://me@host/db.")
@click.option("--scheduler", type=click.Choice(SCHEDULERS), default="local", show_default=True,
              help="The batch scheduler the service submits launcher jobs to.")
def init(path: str, db_url: str | None, scheduler: str) -> None:
    """Create a new workspace and its database.

    PATH becomes a directory holding sluice.toml (settings), the job database (an SQLite file unless
    --db names a server), data/ (job working directories) and logs/.
    """
    from sluice import environ
    from sluice.api import Workspace
    from sluice.api.admin import redact

    ws = Workspace.create(path, db_url, scheduler=scheduler)
    click.echo(f"Created sluice workspace {ws.path}")
    click.echo(f"  database:  {redact(ws.config.db_url)}")
    click.echo(f"  scheduler: {scheduler} (settings in {ws.path / 'sluice.toml'})")
    click.echo("Next:")
    click.echo(f"  cd {ws.path}    (or export {environ.WORKSPACE}={ws.path})")
    click.echo("  sluice app add sim --command 'simulate --temp {temp}'")
    click.echo("  sluice job --name t300 --workflow scan --app sim --param temp=300")
    click.echo("  sluice ls")


@click.group(context_settings=CONTEXT, epilog="Example: sluice db upgrade")
def db() -> None:
    """Look after the workspace's database."""


db.add_command(migrate_to)


@db.command(context_settings=CONTEXT, epilog="Example: sluice db upgrade")
def upgrade() -> None:
    """Upgrade the database schema to what this version of sluice needs (safe to repeat)."""
    from sluice.api import admin

    before, after = admin.upgrade(workspace_arg())
    if before.current:
        click.echo(f"database {after.url} is up to date (revision {after.head})")
    else:
        click.echo(f"upgraded database {after.url} from revision {before.revision or 'none'} to {after.head}")


@db.command(context_settings=CONTEXT, epilog="Example: sluice db status")
def status() -> None:
    """Say where the database is and whether its schema is current."""
    from sluice.api import admin

    st = admin.status(workspace_arg())
    state = "current" if st.current else f"needs `sluice db upgrade` (this sluice needs {st.head})"
    click.echo(f"database {st.url}: schema revision {st.revision or 'none'}, {state}")
