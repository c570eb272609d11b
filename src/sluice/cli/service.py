"""`sluice service` (keep the batch queue fed) and `sluice queue` (launcher batch jobs by hand)."""

from __future__ import annotations

import json
from datetime import datetime

import click

from sluice.cli.common import CONTEXT, open_ws


@click.command(context_settings=CONTEXT, epilog="Example: sluice service --once   # one pass, e.g. from cron")
@click.option("--once", is_flag=True, help="Do one pass and exit.")
@click.option("--period", type=click.FloatRange(min=0.1), help="Seconds between passes (default: sluice.toml, 10).")
@click.option("--scheduler", metavar="NAME", help="Override sluice.toml: local, slurm, pbs, cobalt, lsf.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Idle timeout given to the launchers it submits.")
@click.option("--verbose", "-v", is_flag=True, help="Log every pass.")
def service(once: bool, period: float | None, scheduler: str | None, idle_timeout: float, verbose: bool) -> None:
    """Keep the scheduler fed: submit launcher batch jobs sized to the runnable work, within the queue limits
    of sluice.toml ([queues.NAME]: max_queued, max_running, node and wall-time ranges, project).

    Each pass also syncs batch-job states and recovers jobs of launchers that died. Only one service runs per
    workspace; a second one says so and exits.
    """
    import logging

    from sluice.service import Service, scheduler_for

    logging.basicConfig(level=logging.INFO if verbose or once else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    ws = open_ws()
    Service(ws, scheduler_for(ws, scheduler), period=period, idle_timeout=idle_timeout).run(once=once)


@click.group(context_settings=CONTEXT, epilog="Example: sluice queue submit --nodes 2 --wall-time 30")
def queue() -> None:
    """Launcher batch jobs: submit one by hand, list them with their states, cancel one."""


@queue.command("submit", context_settings=CONTEXT,
               epilog="Example: sluice queue submit --nodes 4 --wall-time 01:00:00 --queue debug --job-mode mpi")
@click.option("--nodes", "-n", type=int, required=True, help="Nodes to ask for.")
@click.option("--wall-time", "-t", required=True, metavar="MIN", help="Minutes, or HH:MM:SS.")
@click.option("--queue", "-q", "queue_name", metavar="Q", help="Queue / partition.")
@click.option("--project", "-A", metavar="P", help="Project / account to charge.")
@click.option("--job-mode", type=click.Choice(["serial", "mpi"]), default="serial", show_default=True)
@click.option("--scheduler", metavar="NAME", help="Override sluice.toml: local, slurm, pbs, cobalt, lsf.")
def queue_submit(nodes: int, wall_time: str, queue_name: str | None, project: str | None, job_mode: str,
                 scheduler: str | None) -> None:
    """Submit one launcher batch job; a refusal by the scheduler is recorded and shown by `sluice queue ls`."""
    from sluice.errors import UserError
    from sluice.service import scheduler_for, submit
    from sluice.timefmt import wall_minutes

    wall = wall_minutes(wall_time, "--wall-time")
    assert wall is not None
    ws = open_ws()
    row = submit(ws, scheduler_for(ws, scheduler), nodes=nodes, wall_time_min=wall, queue=queue_name,
                 project=project, job_mode=job_mode)
    if row["state"] == "submit_failed":
        raise UserError(f"batch job {row['id']} was not accepted: {row['message']}")
    click.echo(f"batch job {row['id']} submitted as {row['scheduler']} job {row['native_id']}")


@queue.command("ls", context_settings=CONTEXT, epilog="Example: sluice queue ls --all --json")
@click.option("--all", "show_all", is_flag=True, help="Include ended batch jobs.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
def queue_ls(show_all: bool, as_json: bool) -> None:
    """Our batch jobs: scheduler id, queue, nodes, wall time, state and any message (e.g. a refused submit)."""
    from sluice.cli.query import queue_ls_fast

    def when(t: float | None) -> str:
        return datetime.fromtimestamp(t).strftime("%m-%d %H:%M:%S") if t else ""

    if queue_ls_fast(show_all, as_json, when):  # the stdlib path: no SQLAlchemy to import
        return
    ws = open_ws()
    rows = ws.batch_jobs(active_only=not show_all)
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=1))
        return
    from sluice.cli.render import table

    table(["id", "scheduler", "native_id", "queue", "nodes", "wall_min", "mode", "state", "submitted", "message"],
          [[r["id"], r["scheduler"], r["native_id"], r["queue"], r["num_nodes"], r["wall_time_min"], r["job_mode"],
            r["state"], when(r["submitted_at"]), r["message"]] for r in rows])


@queue.command("cancel", context_settings=CONTEXT, epilog="Example: sluice queue cancel 3")
@click.argument("batch_id", type=int)
@click.option("--scheduler", metavar="NAME", help="Override sluice.toml: local, slurm, pbs, cobalt, lsf.")
def queue_cancel(batch_id: int, scheduler: str | None) -> None:
    """Cancel one of our batch jobs (its launcher's running jobs are retried by the next launcher)."""
    from sluice.service import cancel, scheduler_for

    ws = open_ws()
    row = cancel(ws, scheduler_for(ws, scheduler), batch_id)
    click.echo(f"batch job {row['id']} cancelled")

COMMANDS = [service, queue]
