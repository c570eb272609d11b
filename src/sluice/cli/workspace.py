"""`sluice init` (a new workspace) and `sluice db upgrade` (bring its schema up to date)."""

from __future__ import annotations

import click

from sluice.cli.common import CONTEXT, workspace_arg

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
    from sluice import db
    from sluice.api import Workspace

    ws = Workspace.create(path, db_url, scheduler=scheduler)
    click.echo(f"Created sluice workspace {ws.path}")
    click.echo(f"  database:  {db.redact(ws.config.db_url)}")
    click.echo(f"  scheduler: {scheduler} (settings in {ws.path / 'sluice.toml'})")
    click.echo("Next:")
    click.echo(f"  cd {ws.path}    (or export SLUICE_WORKSPACE={ws.path})")
    click.echo("  sluice app add sim --command 'simulate --temp {temp}'")
    click.echo("  sluice job --name t300 --workflow scan --app sim --param temp=300")
    click.echo("  sluice ls")


@click.group(context_settings=CONTEXT, epilog="Example: sluice db upgrade")
def db() -> None:
    """Look after the workspace's database."""


@db.command(context_settings=CONTEXT, epilog="Example: sluice db upgrade")
def upgrade() -> None:
    """Upgrade the database schema to what this version of sluice needs (safe to repeat)."""
    from sluice import config
    from sluice import db as sdb

    root = config.find_workspace(workspace_arg())
    cfg = config.load(root)
    eng = sdb.engine(cfg.db_url)
    with eng.connect() as conn:
        before = sdb.current_revision(conn)
    try:
        sdb.upgrade(eng)
    except Exception as e:
        if not type(e).__module__.startswith("alembic"):
            raise
        from sluice.errors import UserError

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"cannot upgrade database {sdb.redact(cfg.db_url)} from revision {before}: {first}") from None
    if before == sdb.HEAD:
        click.echo(f"database {sdb.redact(cfg.db_url)} is up to date (revision {sdb.HEAD})")
    else:
        click.echo(f"upgraded database {sdb.redact(cfg.db_url)} from revision {before or 'none'} to {sdb.HEAD}")


@db.command(context_settings=CONTEXT, epilog="Example: sluice db status")
def status() -> None:
    """Say where the database is and whether its schema is current."""
    from sluice import config
    from sluice import db as sdb

    root = config.find_workspace(workspace_arg())
    cfg = config.load(root)
    with sdb.engine(cfg.db_url).connect() as conn:
        rev = sdb.current_revision(conn)
    state = "current" if rev == sdb.HEAD else f"needs `sluice db upgrade` (this sluice needs {sdb.HEAD})"
    click.echo(f"database {sdb.redact(cfg.db_url)}: schema revision {rev or 'none'}, {state}")
