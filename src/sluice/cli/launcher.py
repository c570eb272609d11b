"""`sluice launcher`: run the campaign's jobs inside this allocation (or on this machine)."""

from __future__ import annotations

import click

from sluice.cli.common import CONTEXT, open_ws, parse_kv
from sluice.errors import UserError


@click.command(context_settings=CONTEXT, epilog="Example: sluice launcher --job-mode serial --wall-time 60")
@click.option("--job-mode", type=click.Choice(["serial", "mpi"]), default="serial", show_default=True,
              help="serial: many single-node tasks per node; mpi: multi-node jobs through mpiexec/srun.")
@click.option("--workflow", "workflows", multiple=True, metavar="W", help="Only jobs of this workflow (repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="Only jobs with this tag (repeatable).")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Stop after starting this many jobs.")
@click.option("--max-ranks", type=click.IntRange(min=1), help="At most this many ranks running at once.")
@click.option("--wall-time", "wall_time", metavar="MIN",
              help="Minutes this launcher may run (when the scheduler does not say), e.g. 60 or 01:00:00.")
@click.option("--idle-timeout", type=click.FloatRange(min=0), default=None, metavar="S",
              help="Seconds with nothing to run before exiting, whatever the database holds (wait in the "
                   "allocation for the next shot). Default: exit once every job it could run has ended, or "
                   "after 10 s with nothing to run.")
@click.option("--consume-all", is_flag=True,
              help="Keep waiting for work until every selected job has ended (or the allocation does).")
@click.option("--mpi-launcher", metavar="NAME", help="Force the MPI launcher: mpich, openmpi, srun, aprun, jsrun.")
@click.option("--launch-interval", type=click.FloatRange(min=0), default=0.0,
              help="Seconds between two launches (sites that limit aprun/srun rates).")
@click.option("--max-launches", type=click.IntRange(min=1),
              help="At most this many launcher processes (mpiexec/srun) at once in mpi mode.")
@click.option("--heartbeat", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between heartbeats; a session silent for 6 heartbeats is declared lost.")
@click.option("--kill-grace", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds between TERM and KILL when jobs must stop.")
@click.option("--quiet", "-q", is_flag=True, help="No live status line.")
def launcher(job_mode: str, workflows: tuple[str, ...], tags: tuple[str, ...], max_jobs: int | None,
             max_ranks: int | None, wall_time: str | None, idle_timeout: float | None, consume_all: bool,
             mpi_launcher: str | None, launch_interval: float, max_launches: int | None, heartbeat: float,
             kill_grace: float, quiet: bool) -> None:
    """Run runnable jobs at the machine's limit until the work, the allocation or the patience runs out.

    Nodes, cores and the allocation's end come from the scheduler (Slurm, PBS, Cobalt, LSF) or this machine.
    No job is started that cannot finish before the end; jobs still running near it are stopped and marked
    RUN_TIMEOUT, so the next launcher retries them.
    """
    import os

    from sluice.launcher.launcher import Launcher, Options
    from sluice.launcher.mpi import LauncherNotFound
    from sluice.launcher.supervise import supervised
    from sluice.timefmt import wall_minutes

    ws = open_ws()
    from sluice import environ

    batch = os.environ.get(environ.BATCH_ID)
    opts = Options(job_mode=job_mode, workflows=workflows, tags=tuple(parse_kv(tags, "--tag").items()),
                   max_jobs=max_jobs, max_ranks=max_ranks, wall_time_min=wall_minutes(wall_time, "--wall-time"),
                   idle_timeout=idle_timeout, consume_all=consume_all, mpi_launcher=mpi_launcher,
                   launch_interval_s=launch_interval, max_launches=max_launches, heartbeat_s=heartbeat,
                   stale_after_s=6 * heartbeat, kill_grace_s=kill_grace, status=not quiet,
                   batch_job_id=int(batch) if batch and batch.isdigit() else None)
    try:
        la = Launcher(ws, opts)  # discovery and MPI checks here, so their errors are ours to print
    except LauncherNotFound as e:
        raise UserError(f"{e}; install MPICH (apt-get install mpich) or use --job-mode serial") from None

    def work() -> int:
        ws.close()  # pooled connections belong to the parent; the child opens its own
        summary = la.run()
        click.echo(summary.line(), err=True)
        return summary.exit_code  # 3 when a fault (a full disk) stopped it

    code = supervised(work)
    if code:
        raise SystemExit(code)

COMMANDS = [launcher]
