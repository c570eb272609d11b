"""`sluice dbserver start|stop|status` (a PostgreSQL server of the workspace's own) and `sluice db migrate-to
URL` (an SQLite workspace moved into a database server).

Both exist for the same reason: one SQLite file cannot serve a service on a login node and launchers on compute
nodes. Only click at import time; the engines are imported when a command runs.
"""

from __future__ import annotations

import click

from sluice.cli.common import CONTEXT, workspace_arg

COMMANDS = ["dbserver"]
"""What cli/main.py adds at the top level; `migrate-to` joins the `db` group instead (cli/workspace.py)."""


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


@click.group(context_settings=CONTEXT, epilog="Example: sluice dbserver start --migrate")
def dbserver() -> None:
    """Run a PostgreSQL server of the workspace's own, for campaigns that outgrow SQLite.

    Its data lives in <workspace>/dbserver/; the password is generated and kept in a 0600 file there, never in
    sluice.toml or a log. Needs PostgreSQL's server binaries (apt-get install postgresql).
    """


@dbserver.command(context_settings=CONTEXT,
                  epilog="Example: sluice dbserver start --host 0.0.0.0   # for launchers on compute nodes")
@click.option("--host", metavar="ADDR",
              help="The address to listen on (default: the last one, first 127.0.0.1): 0.0.0.0 or an interface "
                   "lets compute nodes reach it.")
@click.option("--port", type=click.IntRange(1024, 65535), metavar="N",
              help="The TCP port (default: the one used last time if free, else a free one).")
@click.option("--migrate", is_flag=True,
              help="Move the jobs of the workspace's SQLite database into the new server (sluice db migrate-to).")
def start(host: str | None, port: int | None, migrate: bool) -> None:
    """Start the server (creating it and sluice's schema on first use) and point the workspace at it.

    Safe to repeat. A workspace whose SQLite database holds jobs is not switched away from them: pass
    --migrate to move them into the server.
    """
    from sluice import dbserver as server

    st = server.start(workspace_arg(), host=host, port=port, migrate_jobs=migrate)
    click.echo(f"{st.message}: PostgreSQL {st.version} on {st.host}:{st.port}, data in {st.data_dir}")
    click.echo(f"  workspace database: {st.url}")
    if st.moved:
        click.echo(f"  {st.moved}")


@dbserver.command(context_settings=CONTEXT, epilog="Example: sluice dbserver stop")
def stop() -> None:
    """Stop the server cleanly (running transactions are rolled back; launchers retry until it is back)."""
    from sluice import dbserver as server

    st = server.stop(workspace_arg())
    click.echo(f"{st.message} (data in {st.data_dir})")


@dbserver.command(context_settings=CONTEXT, epilog="Example: sluice dbserver status")
def status() -> None:
    """Say whether the server runs, on which port, where its data is and how big it is."""
    from sluice import dbserver as server

    st = server.status(workspace_arg())
    where = f" on {st.host}:{st.port}" if st.running else ""
    click.echo(f"{'running' if st.running else 'stopped'}{where}: PostgreSQL {st.version}, data in {st.data_dir} "
               f"({_size(st.size)})")


@click.command("migrate-to", context_settings=CONTEXT,
               epilog="Example: sluice db migrate-to postgresql+psycopg://me@dbhost/scan")
@click.argument("url")
def migrate_to(url: str) -> None:
    """Move the workspace's SQLite database into the PostgreSQL or MariaDB database at URL.

    Everything is copied with its ids, the counts checked, and only then does sluice.toml name URL; the SQLite
    file is kept as sluice.db.migrated-<date>. Refused while a launcher runs, or when URL already holds sluice
    data; stop `sluice service` first (it keeps the database it opened). Put the password in ~/.pgpass (or
    ?passfile=PATH), not in the URL: sluice.toml keeps the URL.
    """
    from contextlib import ExitStack

    from sluice.api import migrate
    from sluice.cli.progressbar import progress

    with ExitStack() as stack:
        moved = migrate.migrate(workspace_arg(), url,
                                progress=lambda total: stack.enter_context(progress("copying rows", total)))
    what = ", ".join(f"{n} {t}" for t, n in moved.counts.items())
    click.echo(f"moved {what} from {moved.source} into {moved.target} in {moved.seconds:.1f} s")
    click.echo(f"sluice.toml now names {moved.target}; the SQLite file is kept as {moved.kept_as}")
