"""Seeing the campaign: `ls` (tables, summary, DAG tree, live view), `show` one job, its `history`.

`ls`, `show` and `history` answer without SQLAlchemy when they can (sluice.api.fast): they are what people
type most, and importing it costs more than their queries. Both paths print the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from sluice.cli import render
from sluice.cli.common import CONTEXT, build_filters, filter_options, open_ws, workspace_arg
from sluice.errors import UserError

if TYPE_CHECKING:
    from sluice.api import Job, Workspace

DEFAULT_LIMIT = 1000
COLUMNS = ["job_id", "name", "workflow", "application", "state"]
WIDE = ["nodes", "ranks", "retries", "session", "state message"]
TREE_MAX_NODES = 10_000
SHOW_ALL = 10
"""`show` lists a job's parents (children) when it has at most this many; else counts by state and a few."""
SHOW_SOME = 5
HISTORY = ["time", "change", "actor", "message"]


def row(j: Job, wide: bool) -> list[Any]:
    from sluice.states import shown

    state = shown(j.state, j.session_id is not None, j.deadline, j.updated_at)
    r: list[Any] = [j.id, j.name, j.workflow, j.app, state]
    if wide:
        r += [j.num_nodes, j.ranks_per_node, f"{j.retry_count}/{j.max_retries}", j.session_id, j.state_message]
    return r


@click.command(context_settings=CONTEXT,
               epilog="Example: sluice ls --workflow scan --state RUNNING --state FAILED\n\n"
                      "Example: sluice ls --summary    |    sluice ls --tree --workflow scan    |    "
                      "sluice ls --parents-of 42    |    sluice ls --watch --workflow scan")
@click.argument("what", required=False, type=click.Choice(["jobs", "apps"]), default="jobs")
@filter_options
@click.option("--parents-of", "parents_of", metavar="JOB", help="Only the parents of JOB.")
@click.option("--children-of", "children_of", metavar="JOB", help="Only the children of JOB.")
@click.option("--limit", type=click.IntRange(min=0), default=DEFAULT_LIMIT, show_default=True,
              help="Show at most this many jobs (0: all).")
@click.option("--summary", is_flag=True, help="Count jobs per state instead of listing them.")
@click.option("--tree", is_flag=True, help="Draw the dependency graph of the selected jobs.")
@click.option("--watch", is_flag=True, help="A live view of the selected jobs by state, with the rate they end "
                                            "at, until Ctrl-C (piped: a line whenever the counts change).")
@click.option("--wide", "--verbose", "-v", "wide", is_flag=True,
              help="More columns: nodes, ranks, retries, launcher session, state message.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def ls(ctx: click.Context, what: str, parents_of: str | None, children_of: str | None, limit: int, summary: bool,
       tree: bool, watch: bool, wide: bool, as_json: bool, **kw: Any) -> None:
    """List jobs, or count them per state.

    Columns: job_id, name, workflow, application, state (--wide adds more). Filters combine with AND;
    repeated --state or --workflow values combine with OR.
    """
    if what == "apps":
        from sluice.cli.apps import ls_apps

        ctx.invoke(ls_apps, as_json=as_json)
        return
    if parents_of and children_of:
        raise UserError("give --parents-of or --children-of, not both")
    rel_ref = ("parents", parents_of) if parents_of else ("children", children_of) if children_of else None
    if watch:
        if tree or as_json:
            raise UserError("--watch draws its own view; leave out --tree and --json")
        from sluice.cli.wait import watch as live

        ws = open_ws()
        try:
            live(ws, _selection(ws, kw, rel_ref), until_done=False)
        except KeyboardInterrupt:  # Ctrl-C is how a watch ends
            click.echo("", err=True)
        return
    simple = not (kw.get("app") or kw.get("tags") or kw.get("name") or kw.get("ids") or tree or wide)
    if simple and not (as_json and not summary) and _fast(summary, as_json, limit, kw, rel_ref):
        return
    ws = open_ws()
    filters = _selection(ws, kw, rel_ref)
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
        click.echo(f"sluice: showing the first {limit} of {ws.count(**filters)} jobs; narrow the filters, or pass "
                   "--limit 0 for all", err=True)
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


def _selection(ws: Workspace, kw: dict[str, Any], rel_ref: tuple[str, str] | None) -> dict[str, Any]:
    """The Workspace filters of the options, --parents-of/--children-of as the ids of those relatives."""
    filters = build_filters(ws, kw)
    if rel_ref is not None:
        side, ref = rel_ref
        jid = ws.resolve(ref)
        rel = {j.id for j in (ws.parents(jid) if side == "parents" else ws.children(jid))}
        filters["ids"] = sorted(rel & set(filters["ids"]) if "ids" in filters else rel)
    return filters


def _fast(summary: bool, as_json: bool, limit: int, kw: dict[str, Any], rel_ref: tuple[str, str] | None) -> bool:
    """The read-only path without SQLAlchemy (SQLite, PostgreSQL: see sluice.api.fast); False: the normal path."""
    from sluice.api import fast

    states, wfs = kw.get("states") or (), kw.get("workflows") or ()
    relation = None
    if rel_ref is not None:
        jid = fast.resolve(workspace_arg(), rel_ref[1])
        if jid is None:
            return False
        relation = (rel_ref[0], jid)
    if summary:
        counts = fast.summary(workspace_arg(), states, wfs, relation)
        if counts is None:
            return False
        if as_json:
            render.print_json(counts)
        else:
            render.table(["state", "jobs"], [*counts.items(), ("total", sum(counts.values()))])
        return True
    got = fast.listing(workspace_arg(), states, wfs, limit, relation)
    if got is None:
        return False
    rows, total = got
    if limit and total > limit:
        click.echo(f"sluice: showing the first {limit} of {total} jobs; narrow the filters, or pass --limit 0 "
                   "for all", err=True)
    if not rows:
        click.echo("no jobs match" if (states or wfs or relation) else "no jobs yet; add one with `sluice job`",
                   err=True)
        return True
    render.table(COLUMNS, rows)
    return True


def ws_edges(ws: Any, ids: Sequence[int]) -> list[tuple[int, int]]:
    inside = set(ids)
    return [(p, c) for p, c in ws.edges(ids) if p in inside and c in inside]


def draw_tree(edges: Sequence[tuple[int, int]], jobs: Sequence[Job], as_json: bool) -> None:
    """Roots are jobs with no parent among the selection. A job with several parents is drawn once, under the
    first that reaches it, marked "(+N more parents)"; under the others it is one line pointing up, so a fan-in
    of 200 parents costs 200 lines, not 200 copies of its subtree."""
    if as_json:
        render.print_json({"jobs": [{"id": j.id, "name": j.name, "workflow": j.workflow, "state": j.state}
                                    for j in jobs],
                           "edges": [list(e) for e in edges]})
        return
    from rich.tree import Tree

    by_id = {j.id: j for j in jobs}
    kids: dict[int, list[int]] = {}
    n_parents: dict[int, int] = {}
    for p, c in edges:
        kids.setdefault(p, []).append(c)
        n_parents[c] = n_parents.get(c, 0) + 1
    top = Tree(f"{len(jobs)} job(s)", guide_style="dim")

    def label(j: Job) -> str:
        return f"{j.id} {j.workflow}/{j.name} [{j.state}]"

    drawn: dict[int, int] = {}  # job -> the parent it is drawn under (0: a root)
    shown = 0
    stack: list[tuple[Tree, int, int]] = [(top, j.id, 0) for j in reversed(jobs) if j.id not in n_parents]
    while stack:
        parent_node, jid, parent = stack.pop()
        if shown >= TREE_MAX_NODES:
            parent_node.add("...")
            click.echo(f"sluice: tree cut at {TREE_MAX_NODES} nodes; narrow the filters", err=True)
            break
        shown += 1
        if jid in drawn:
            parent_node.add(f"↑ {label(by_id[jid])} (drawn under {drawn[jid]})")
            continue
        drawn[jid] = parent
        more = n_parents.get(jid, 0) - 1
        node = parent_node.add(label(by_id[jid]) + (f" (+{more} more parent{'s' * (more > 1)})" if more > 0 else ""))
        for c in reversed(sorted(kids.get(jid, []))):
            stack.append((node, c, jid))
    render.show(top)


# ---------------------------------------------------------------------------------------------- show
def relatives_text(counts: dict[str, int], first: Sequence[tuple[Any, ...]], job_id: int, side: str) -> str:
    """A job's parents or children for `show`: all of them when few; else how many per state, the first few,
    and the command that lists them all."""
    total = sum(counts.values())
    if total == 0:
        return "none"
    listed = ", ".join(f"{i} {n} [{s}]" for i, n, s in first[: SHOW_ALL if total <= SHOW_ALL else SHOW_SOME])
    if total <= SHOW_ALL:
        return listed
    by_state = ", ".join(f"{n} {s}" for s, n in counts.items())
    return f"{total}: {by_state}\n{listed}, ...\nall of them: sluice ls --{side}-of {job_id}"


def _counted(jobs: Sequence[Job]) -> tuple[dict[str, int], list[tuple[Any, ...]]]:
    from sluice.states import State

    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.state] = counts.get(j.state, 0) + 1
    return {s.value: counts[s.value] for s in State if s.value in counts}, [(j.id, j.name, j.state) for j in jobs]


def history_rows(evs: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [[render.when(e["timestamp"]), f"{e['from_state'] or '-'} → {e['to_state']}", e["actor"], e["message"]]
            for e in evs]


def job_view(ref: str, everything: bool) -> dict[str, Any]:
    """What `show` prints, from the fast path or the Workspace (see sluice.api.fast.job_view)."""
    from sluice.api import fast

    view = fast.job_view(workspace_arg(), ref, None if everything else SHOW_ALL)
    if view is not None:
        return view
    import dataclasses

    j = open_ws().job(ref)
    return {"job": j.to_dict(), "parents": _counted(j.parents), "children": _counted(j.children),
            "history": [dataclasses.asdict(e) for e in j.history]}


@click.command(context_settings=CONTEXT, epilog="Example: sluice show 42    |    sluice show scan/t300 --json")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(job: str, as_json: bool) -> None:
    """Show everything about one job.

    Every field, its parents and children, its working directory, and its history. JOB is an id, a
    unique id prefix, a name, or WORKFLOW/NAME. A job with many parents or children shows how many per
    state and a few of them; `sluice ls --parents-of JOB` lists them all.
    """
    view = job_view(job, as_json)
    d = dict(view["job"])
    if as_json:
        for side in ("parents", "children"):
            d[side] = [{"id": i, "name": n, "state": s} for i, n, s in view[side][1]]
        d["history"] = view["history"]
        render.print_json(d)
        return
    d["created_at"], d["updated_at"] = render.when(d["created_at"]), render.when(d["updated_at"])
    for side in ("parents", "children"):
        counts, first = view[side]
        d[side] = relatives_text(counts, first, d["id"], side)
    render.key_values(d.items(), title=f"job {d['id']}")
    click.echo()
    render.table(HISTORY, history_rows(view["history"]), title="history")


@click.command(context_settings=CONTEXT, epilog="Example: sluice history 42")
@click.argument("job")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def history(job: str, as_json: bool) -> None:
    """Show the state changes of one job: when, from, to, who, and why."""
    from sluice.api import fast

    evs = fast.history(workspace_arg(), job)
    if evs is None:
        import dataclasses

        evs = [dataclasses.asdict(e) for e in open_ws().history(job)]
    if as_json:
        render.print_json(evs)
        return
    render.table(HISTORY, history_rows(evs))


def queue_ls_fast(show_all: bool, as_json: bool, when: Any) -> bool:
    """`sluice queue ls` without SQLAlchemy; False when the fast path cannot answer (then take the normal one).
    `when` formats a time as queue ls shows it."""
    import json

    from sluice.api import fast

    rows = fast.batch_jobs(workspace_arg(), active_only=not show_all)
    if rows is None:
        return False
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=1))
        return True
    render.table(["id", "scheduler", "native_id", "queue", "nodes", "wall_min", "mode", "state", "submitted",
                  "message"],
                 [[r["id"], r["scheduler"], r["native_id"], r["queue"], r["num_nodes"], r["wall_time_min"],
                   r["job_mode"], r["state"], when(r["submitted_at"]), r["message"]] for r in rows])
    return True
