"""`sluice submit FILE`: a whole workflow (apps and jobs with dependencies) from one YAML or JSON file.

The file's format and its checks are sluice.api.workflow_file's (the same rules as the API's add_jobs); this
module is the command: it checks the whole file, then writes it or, with --dry-run, says what it would write.
"""

from __future__ import annotations

from pathlib import Path

import click

from sluice.cli.common import CONTEXT, open_ws


@click.command(context_settings=CONTEXT, epilog="Example: sluice submit campaign.yaml --dry-run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check the file and say what it would add; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the new job ids as JSON (name -> id).")
def submit(file: str, dry_run: bool, as_json: bool) -> None:
    """Add the apps and jobs of a YAML or JSON workflow file.

    The whole file is checked before anything is written: a bad file changes nothing. Jobs take the
    fields of the Python API's add_jobs; parents name other jobs of the file, or existing job ids.

    \b
        workflow: scan
        apps:
          sim: {command: "simulate --temp {temp}", description: "MD run"}
        jobs:
          - {name: t300, app: sim, params: {temp: 300}, num_nodes: 2}
          - {name: t310, app: sim, params: {temp: 310}}
          - {name: ana, app: sim, params: {temp: 0}, parents: [t300, t310]}
    """
    from sluice.api import workflow_file

    path = Path(file)
    ws = open_ws()
    p = workflow_file.plan(ws, path, workflow_file.load_file(path))
    summary = (f"{len(p.new_apps)} new app(s), {len(p.specs)} job(s), {p.edges} dependency(ies) "
               f"in {len(p.layers)} layer(s)")
    if dry_run:
        click.echo(f"{path}: OK: would add {summary}")
        return
    ids = workflow_file.add(ws, p)
    if as_json:
        from sluice.cli import render

        render.print_json({p.specs[i].get("name"): jid for i, jid in sorted(ids.items())})
        return
    click.echo(f"{path}: added {summary}")
    if ids:
        click.echo(f"job ids {min(ids.values())}..{max(ids.values())}")
