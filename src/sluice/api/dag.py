"""The dependency graph: Kahn's layering (one implementation), cycle checks, and what edge changes set off.

The graph in the database is always acyclic: every new edge is checked against the part of the graph it can
reach before it is written. Balsam turned its check off as too slow; this one visits only what the new edges
can reach, one query per level.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from sqlalchemy import Connection, select

from sluice.api.transitions import apply, children_of, release_children
from sluice.errors import UserError
from sluice.states import Change, S, ready_path
from sluice.store import db
from sluice.store.models import apps, job_parents, jobs

N = TypeVar("N", bound=Hashable)


def layers(nodes: Iterable[N], out: Mapping[N, Iterable[N]]) -> tuple[list[list[N]], list[N]]:
    """Kahn's algorithm: layer k holds the nodes whose parents all lie in earlier layers. Returns the layers
    and the nodes left over, which lie on (or behind) a cycle."""
    order = list(nodes)
    indeg = dict.fromkeys(order, 0)
    for p in order:
        for c in out.get(p, ()):
            indeg[c] += 1
    layer = [n for n in order if indeg[n] == 0]
    result: list[list[N]] = []
    while layer:
        result.append(layer)
        nxt: list[N] = []
        for n in layer:
            for c in out.get(n, ()):
                indeg[c] -= 1
                if indeg[c] == 0:
                    nxt.append(c)
        layer = nxt
    placed = {n for lay in result for n in lay}
    return result, [n for n in order if n not in placed]


def check_acyclic(conn: Connection, new: Sequence[tuple[int, int]]) -> None:
    """Refuse edges that would close a cycle.

    Any cycle passes through a new edge p->c and lies wholly among the descendants of the new children: walk
    those and layer them; whatever cannot be layered is on a cycle.
    """
    out: dict[int, set[int]] = {}
    for p, c in new:
        out.setdefault(p, set()).add(c)
    seen: set[int] = set()
    frontier = sorted({c for _, c in new})
    while frontier:
        seen.update(frontier)
        for p, c in db.raw_in(conn, "SELECT parent_id, child_id FROM job_parents WHERE parent_id IN", frontier):
            out.setdefault(p, set()).add(c)
        nxt = {c for p in frontier for c in out.get(p, ())}
        frontier = sorted(nxt - seen)
    _, stuck = layers(sorted(seen | {p for p, _ in new}), out)
    on_cycle = set(stuck)
    if on_cycle:
        bad = next((p, c) for p, c in new if p in on_cycle and c in on_cycle)
        raise UserError(
            f"dependency {bad[0]} -> {bad[1]} would make a cycle (through jobs "
            f"{', '.join(map(str, sorted(on_cycle)[:8]))}); a job cannot (indirectly) wait for itself"
        )


def existing_edges(conn: Connection, pairs: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    children = sorted({c for _, c in pairs})
    rows = db.raw_in(conn, "SELECT parent_id, child_id FROM job_parents WHERE child_id IN", children)
    return {(int(p), int(c)) for p, c in rows}


def descendants(conn: Connection, roots: Sequence[int]) -> list[int]:
    seen: set[int] = set()
    frontier = list(roots)
    while frontier:
        kids = [k for k in children_of(conn, frontier) if k not in seen]
        seen.update(kids)
        frontier = kids
    return sorted(seen - set(roots))


_WAITING = frozenset({S.CREATED.value, S.AWAITING_PARENTS.value})
_HOLDABLE = frozenset({S.READY.value, S.STAGED_IN.value, S.PREPROCESSED.value, S.RESTART_READY.value})


def hold_children(conn: Connection, kids: Sequence[int], st: Mapping[int, str], actor: str) -> None:
    """A job that gains an unfinished parent waits for it; one already running cannot gain one."""
    changes = []
    for k in kids:
        cur = st[k]
        if cur in _WAITING:
            continue
        if cur in _HOLDABLE:
            changes.append(Change(k, cur, S.AWAITING_PARENTS, "waiting on a new parent"))
        else:
            raise UserError(f"job {k} is {cur}: too late to give it a parent")
    apply(conn, changes, actor)


def release(conn: Connection, kids: Sequence[int], actor: str) -> None:
    """Re-check children whose parent set changed: release those with nothing left to wait for."""
    has_parent = select(job_parents.c.child_id).where(job_parents.c.child_id.in_(list(kids)))
    parentless = set(kids) - set(conn.execute(has_parent).scalars())
    rows = conn.execute(select(jobs.c.id, jobs.c.stage_in, apps.c.preprocess).join(apps)
                        .where(jobs.c.id.in_(sorted(parentless)), jobs.c.state == S.AWAITING_PARENTS))
    changes = []
    for r in rows:
        path = ready_path(bool(r.stage_in), bool(r.preprocess))
        changes.append(Change(r.id, S.AWAITING_PARENTS, path[-1], "parent removed", via=path[:-1]))
    apply(conn, changes, actor, strict=False)
    finished_parents = conn.execute(select(job_parents.c.parent_id).join(jobs, jobs.c.id == job_parents.c.parent_id)
                                    .where(job_parents.c.child_id.in_(list(kids)),
                                           jobs.c.state == S.JOB_FINISHED)).scalars().all()
    if finished_parents:
        release_children(conn, sorted(set(finished_parents)), actor)
