"""`sluice watch DIR --app APP`: one job per new file, exactly once, until stopped."""

from __future__ import annotations

import click

from sluice.cli.common import CONTEXT, open_ws, parse_kv


@click.command(context_settings=CONTEXT,
               epilog="Example: sluice watch /data/shots --app analyse --pattern 'shot_*.h5' "
                      "--param input={path} --deadline 14")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--app", required=True, metavar="APP", help="The app each file's job runs.")
@click.option("--pattern", default="*", show_default=True, metavar="GLOB", help="Only files whose name matches.")
@click.option("--param", "params", multiple=True, metavar="NAME=TEMPLATE",
              help="A param of the job: {path}, {name} and {stem} are the file's. Repeatable.")
@click.option("--workflow", default="watch", show_default=True, metavar="W", help="The jobs' workflow.")
@click.option("--deadline", "deadline", type=float, metavar="MIN",
              help="Each job should end within MIN minutes of its file's arrival (the most urgent start first).")
@click.option("--priority", type=click.IntRange(min=0), default=0, show_default=True,
              help="Higher starts before other runnable work.")
@click.option("--settle", type=click.FloatRange(min=0), default=1.0, show_default=True, metavar="S",
              help="A file the kernel did not see closed counts as complete once unchanged for S seconds.")
def watch(directory: str, app: str, pattern: str, params: tuple[str, ...], workflow: str, deadline: float | None,
          priority: int, settle: float) -> None:
    """Add one job per new file in DIRECTORY, once the file is completely written, until stopped.

    Each file gets exactly one job, across restarts of the watcher (kill -9 included): its job is named after
    the file, and a workflow never gets a second job of that name. Files already there when the watcher
    starts get theirs too. Start a launcher that waits for work (`sluice launcher --idle-timeout 3600`) and
    each job starts as soon as its file is written.
    """
    from pathlib import Path

    from sluice.watch import Watch, Watcher

    if deadline is not None and deadline <= 0:
        from sluice.errors import UserError

        raise UserError(f"--deadline must be a positive number of minutes, got {deadline:g}")
    ws = open_ws()
    w = Watch(Path(directory).expanduser(), app, pattern, workflow, parse_kv(params, "--param"), deadline, priority,
              settle)
    watcher = Watcher(ws, w)
    click.echo(f"watching {watcher.directory} for {pattern} -> app {app} (workflow {workflow}); Ctrl-C stops",
               err=True)
    n = watcher.run()
    click.echo(f"watch stopped: {n} job(s) added", err=True)
