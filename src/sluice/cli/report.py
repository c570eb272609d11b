"""`sluice report`: throughput, utilization and errors of a campaign, from its event history."""

from __future__ import annotations

import click

from sluice.cli.common import CONTEXT, open_ws


@click.command(context_settings=CONTEXT, epilog="Example: sluice report --workflow scan --bins 10")
@click.option("--workflow", metavar="W", help="Only this workflow's jobs.")
@click.option("--bins", type=click.IntRange(min=1, max=500), default=12, show_default=True,
              help="Rows of the timeline.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts and plots.")
def report(workflow: str | None, bins: int, as_json: bool) -> None:
    """How the campaign went: jobs finished over time (throughput), jobs running over time (utilization),
    and the most common errors, all computed from the event log."""
    from datetime import datetime

    from sluice.cli import render
    from sluice.report import build

    r = build(open_ws(), workflow=workflow, bins=bins)
    if as_json:
        render.print_json(r.to_dict())
        return
    if not r.runs:
        click.echo("no job has run yet")
        return
    click.echo(f"{r.finished} finished, {r.failed} failed, {r.runs} runs in {r.end - r.start:.1f} s: "
               f"{r.rate_per_s:.2f} jobs/s; running jobs: peak {r.peak_running}, mean {r.mean_running:.1f}")
    render.table(["time", "finished", "running (peak)"],
                 [[datetime.fromtimestamp(b["t"]).strftime("%H:%M:%S"), int(b["finished"]), int(b["running"])]
                  for b in r.timeline])
    if r.errors:
        render.table(["error", "count"], sorted(r.errors.items(), key=lambda kv: -kv[1]))


COMMANDS = [report]
