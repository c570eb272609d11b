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
@click.option("--new", is_flag=True, help="Add a fresh copy even of jobs the workflow already holds.")
@click.option("--json", "as_json", is_flag=True, help="Print the job ids as JSON (name -> id).")
def submit(file: str, dry_run: bool, new: bool, as_json: bool) -> None:
    """Add the apps and jobs of a YAML or JSON campaign file.

    The whole file is checked before anything is written: a bad file changes nothing and the error names
    the file, the line and the field. Jobs take the fields of the Python API's add_jobs. A `sweep` makes one
    job per point (several keys: every combination; `zip:` pairs lists; `{range: [start, stop, step]}`), its
    values filling `{key}` in the job's fields and the app's params. `after` names parents: jobs of the
    file, globs over their names (`unw-*`), or jobs already in the database.

    Submitting the same file again adds only what is not there yet; --new adds a fresh copy.

    \b
        workflow: hep
        apps: {gen: "gen --seed {seed}", unw: "unweight", merge: "merge"}
        jobs:
          - {name: "gen-{seed}", app: gen, sweep: {seed: [1, 2, 3, 4]}}
          - {name: "unw-{seed}", app: unw, sweep: {seed: [1, 2, 3, 4]}, after: "gen-{seed}"}
          - {name: merge, app: merge, after: "unw-*"}
    """
    from sluice.api import workflow_file
    from sluice.cli import render
    from sluice.cli.progressbar import progress

    path = Path(file)
    ws = open_ws()
    p = workflow_file.plan(ws, path, workflow_file.load_file(path), new=new)
    there = f"; {len(p.existing)} already there" if p.existing else ""
    summary = (f"{len(p.new_apps)} new app(s), {p.to_add} job(s), {p.edges} dependency(ies) "
               f"in {len(p.layers)} layer(s){there}")
    if dry_run:
        click.echo(f"{path}: OK: would add {summary}")
        for n in [n for lay in p.layers for n in lay][:10]:
            s = p.specs[n]
            click.echo(f"  {s.get('workflow') or 'default'}/{s['name']}: {s['app']} {s.get('params') or ''}".rstrip())
        if p.to_add > 10:
            click.echo(f"  ... and {p.to_add - 10} more")
        return
    with progress("adding jobs", p.to_add) as step:
        ids = workflow_file.add(ws, p, progress=step)
    if as_json:
        render.print_json({p.specs[i].get("name"): jid for i, jid in sorted(ids.items())})
        return
    click.echo(f"{path}: added {summary}")
    fresh = [ids[n] for lay in p.layers for n in lay]
    if fresh:
        click.echo(f"job ids {min(fresh)}..{max(fresh)}")
