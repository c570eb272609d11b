"""Seeing the campaign: `ls` (tables, summary, DAG tree), `show` one job, its `history`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from sluice.cli import render
from sluice.cli.common import CONTEXT, build_filters, filter_options, open_ws

if TYPE_CHECKING:
    from sluice.api import Event, Job

DEFAULT_LIMIT = 1000
COLUMNS = ["job_id", "name", "workflow", "application", "state"]
WIDE = ["nodes", "ranks", "retries", "session", "state message"]
TREE_MAX_NODES = 10_000


def row(j: Job, wide: bool) -> list[Any]:
    from sluice.states import shown

    r: list[Any] = [j.id, j.name, j.workflow, j.app, shown(j.state, j.session_id is not None)]
    if wide:
        r += [j.num_nodes, j.ranks_per_node, f"{j.retry_count}/{j.max_retries}", j.session_id, j.state_message]
    return r


@click.command(context_settings=CONTEXT,
               epilog="Example: sluice ls --workflow scan --state RUNNING --state FAILED\n\n"
                      "Example: sluice ls --summary    |    sluice ls --tree --workflow scan")
@click.argument("what", required=False, type=click.Choice(["jobs", "apps"]), default="jobs")
@filter_options
@click.option("--limit", type=click.IntRange(min=0), default=DEFAULT_LIMIT, show_default=True,
              help="Show at most this many jobs (0: all).")
@click.option("--summary", is_flag=True, help="Count jobs per state instead of listing them.")
@click.option("--tree", is_flag=True, help="Draw the dependency graph of the selected jobs.")
@click.option("--wide", "--verbose", "-v", "wide", is_flag=True,
              help="More columns: nodes, ranks, retries, launcher session, state message.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def ls(ctx: click.Context, what: str, limit: int, summary: bool, tree: bool, wide: bool, as_json: bool,
       **kw: Any) -> None:
    """List jobs, or count them per state.

    Columns: job_id, name, workflow, application, state (--wide adds more). Filters combine with AND;
    repeated --state or --workflow values combine with OR.
    """
    if what == "apps":
        from sluice.cli.apps import ls_apps

        ctx.invoke(ls_apps, as_json=as_json)
        return
    simple = not (kw.get("app") or kw.get("tags") or kw.get("name") or kw.get("ids") or tree or wide)
    if simple and not (as_json and not summary) and _fast(summary, as_json, limit, kw):
        return
    ws = open_ws()
    filters = build_filters(ws, kw)
    if summary:
        counts = ws.summary(**filters)
        if as_json:
            render.print_json(counts)
            return
        render.table(["state", "jobs"], [*counts.items(), ("total", sum(counts.values()))])
        return
    jobs = ws.jobs(**filters, limit=limit + 1 if limit else None)
    if limit and len(jobs) > limit:
        jobs = jobs[:limit]
        total = ws.count(**filters)
        click.echo(f"sluice: showing the first {limit} of {total} jobs; narrow the filters, or pass --limit 0 "
                   "for all", err=True)
    if tree:
        draw_tree(ws_edges(ws, [j.id for j in jobs]), jobs, as_json)
        return
    if as_json:
        render.print_json([j.to_dict() for j in jobs])
        return
    if not jobs:
        click.echo("no jobs match" if filters else "no jobs yet; add one with `sluice job`", err=True)
        return
    render.table(COLUMNS + (WIDE if wide else []), (row(j, wide) for j in jobs))


def _fast(summary: bool, as_json: bool, limit: int, kw: dict[str, Any]) -> bool:
    """The read-only path without SQLAlchemy (SQLite, PostgreSQL: see sluice.api.fast); False: the normal path."""
    from sluice.api import fast
    from sluice.cli.common import workspace_arg

    states, wfs = kw.get("states") or (), kw.get("workflows") or ()
    if summary:
        counts = fast.summary(workspace_arg(), states, wfs)
        if counts is None:
            return False
        if as_json:
            render.print_json(counts)
        else:
            render.table(["state", "jobs"], [*counts.items(), ("total", sum(counts.values()))])
        return True
    got = fast.listing(workspace_arg(), states, wfs, limit)
    if got is None:
        return False
    rows, total = got
    if limit and total > limit:
        click.echo(f"sluice: showing the first {limit} of {total} jobs; narrow the filters, or pass --limit 0 "
                   "for all", err=True)
    if not rows:
        click.echo("no jobs match" if (states or wfs) else "no jobs yet; add one with `sluice job`", err=True)
        return True
    render.table(COLUMNS, rows)
    return True


def ws_edges(ws: Any, ids: Sequence[int]) -> list[tuple[int, int]]:
    inside = set(ids)
    return [(p, c) for p, c in ws.edges(ids) if p in inside and c in inside]


def draw_tree(edges: Sequence[tuple[int, int]], jobs: Sequence[Job], as_json: bool) -> None:
    """Each job once under each of its parents; roots are jobs with no parent among the selection."""
    if as_json:
        render.print_json({"jobs": [{"id": j.id, "name": j.name, "workflow": j.workflow, "state": j.state}
                                    for j in jobs],
                           "edges": [list(e) for e in edges]})
        return
    from rich.tree import Tree

    by_id = {j.id: j for j in jobs}
    kids: dict[int, list[int]] = {}
    has_parent: set[int] = set()
    for p, c in edges:
        kids.setdefault(p, []).append(c)
        has_parent.add(c)
    top = Tree(f"{len(jobs)} job(s)", guide_style="dim")

    def label(j: Job) -> str:
        return f"{j.id} {j.workflow}/{j.name} [{j.state}]"

    shown = 0
    stack: list[tuple[Tree, int]] = [(top, j.id) for j in reversed(jobs) if j.id not in has_parent]
    while stack:
        parent_node, jid = stack.pop()
        if shown >= TREE_MAX_NODES:
            parent_node.add("...")
            click.echo(f"sluice: tree cut at {TREE_MAX_NODES} nodes; narrow the filters", err=True)
            break
        node = parent_node.add(label(by_id[jid]))
        shown += 1
        for c in reversed(sorted(kids.get(jid, []))):
            stack.append((node, c))
    render.show(top)


def event_dict(e: Event) -> dict[str, Any]:
    return dataclasses.asdict(e)


def history_rows(evs: Sequence[Event]) -> list[list[Any]]:
    return [[render.when(e.timestamp), f"{e.from_state or '-'} → {e.to_state}", e.actor, e.message] for e in evs]


@click.command(context_settings=CONTEXT, epilog="Example: sluice show 42    |    sluice show scan/t300 --json")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(job: str, as_json: bool) -> None:
    """Show everything about one job.

    Every field, its parents and children, its working directory, and its history. JOB is an id, a
    unique id prefix, a name, or WORKFLOW/NAME.
    """
    ws = open_ws()
    j = ws.job(job)
    parents, children, evs = j.parents, j.children, j.history
    if as_json:
        d = j.to_dict()
        d["parents"] = [{"id": p.id, "name": p.name, "state": p.state} for p in parents]
        d["children"] = [{"id": c.id, "name": c.name, "state": c.state} for c in children]
        d["history"] = [event_dict(e) for e in evs]
        render.print_json(d)
        return
    d = j.to_dict()
    d["created_at"], d["updated_at"] = render.when(j.created_at), render.when(j.updated_at)
    d["parents"] = ", ".join(f"{p.id} {p.name} [{p.state}]" for p in parents) or "none"
    d["children"] = ", ".join(f"{c.id} {c.name} [{c.state}]" for c in children) or "none"
    render.key_values(d.items(), title=f"job {j.id}")
    render.table(["time", "change", "actor", "message"], history_rows(evs), title="history")


@click.command(context_settings=CONTEXT, epilog="Example: sluice history 42")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(job: str, as_json: bool) -> None:
    """Show the state changes of one job: when, from, to, who, and why."""
    evs = open_ws().history(job)
    if as_json:
        render.print_json([event_dict(e) for e in evs])
        return
    render.table(["time", "change", "actor", "message"], history_rows(evs))
