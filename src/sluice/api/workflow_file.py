"""`sluice submit FILE`: a campaign file (campaign.py) checked against the workspace, then written.

Everything is checked before anything is written, by the API's own rules (specs.py): a bad file names the
file, the line and the field, and changes nothing. Jobs are added in dependency order (each layer in one
transaction, with its parents known), so no job is ever runnable before its parents are recorded.

Submitting the same file again adds nothing: a job of the file whose workflow already holds a job of its
name is there already (and is the parent its children get). `new=True` (`--new`) adds a fresh copy.
"""

from __future__ import annotations

import fnmatch
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, tuple_

from sluice.api import campaign, dag, specs
from sluice.errors import UserError
from sluice.store.models import jobs

if TYPE_CHECKING:
    from sluice.api.workspace import Workspace


@dataclass
class Plan:
    """What a file asks for, checked: apps to create, and jobs in layers of dependency order."""

    new_apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    specs: list[dict[str, Any]] = field(default_factory=list)
    file_parents: list[list[int]] = field(default_factory=list)  # parents among the file's jobs, by index
    db_parents: list[list[int]] = field(default_factory=list)  # parents already in the database, by id
    layers: list[list[int]] = field(default_factory=list)  # indexes into specs, jobs to add only
    existing: dict[int, int] = field(default_factory=dict)  # index -> id of a job already there

    @property
    def edges(self) -> int:
        return sum(len(self.file_parents[i]) + len(self.db_parents[i]) for lay in self.layers for i in lay)

    @property
    def to_add(self) -> int:
        return sum(map(len, self.layers))


def load_file(path: Path) -> tuple[campaign.CampaignFile, dict[tuple[Any, ...], int]]:
    return campaign.load(path)


def plan(ws: Workspace, path: Path, loaded: tuple[campaign.CampaignFile, dict[tuple[Any, ...], int]], *,
         new: bool = False) -> Plan:
    """Check a loaded file against the workspace; what it would add, or a UserError naming file:line: field."""
    doc, lines = loaded

    def err(loc: tuple[Any, ...], problem: str) -> UserError:
        return UserError(f"{campaign.where(path, lines, loc)}: {campaign._field(loc)}: {problem}")

    p = Plan()
    commands = _apps(ws, doc, p, err)
    expanded: list[tuple[int, dict[str, Any], list[Any]]] = []  # (entry index, spec, parent refs)
    for i, entry in enumerate(doc.jobs):
        if entry.app not in commands:
            raise err(("jobs", i, "app"), f"unknown app {entry.app!r}; define it under `apps:` or register it with "
                                          "`sluice app add`")
        try:
            pts = list(campaign.points(entry))
        except ValueError as e:
            raise err(("jobs", i, "zip"), str(e)) from None
        extra = dict(entry.model_extra or {})
        for point in pts:
            try:
                s = {k: campaign.fill(v, point) for k, v in extra.items()}
                s["name"] = campaign.fill(entry.name, point)
                refs = campaign.fill(_as_list(entry.after) + _as_list(entry.parents), point)
                s["params"] = campaign.app_params(commands[entry.app], point, s.get("params") or {})
            except ValueError as e:
                raise err(("jobs", i), str(e)) from None
            s["app"] = entry.app
            if doc.workflow and not s.get("workflow"):
                s["workflow"] = doc.workflow
            if isinstance(s.get("args"), str):
                s["args"] = shlex.split(s["args"])
            expanded.append((i, s, refs))
    names: dict[str, int] = {}
    for n, (i, s, _) in enumerate(expanded):
        other = names.get(s["name"])
        if other is not None:
            first = expanded[other][0]
            raise err(("jobs", i, "name"), f"two jobs are named {s['name']!r} (the other from line "
                                           f"{lines.get(('jobs', first), '?')}); names in a file must be unique")
        names[s["name"]] = n
    now = time.time()
    for n, (i, s, refs) in enumerate(expanded):
        fps, dps = _parents(ws, refs, names, n, lambda problem, i=i: err(("jobs", i, "after"), problem))
        try:
            specs.job_row(s, {s["app"]: {"name": s["app"], "id": 0, "command": commands[s["app"]]}}, now)
        except UserError as e:
            raise err(("jobs", i), f"{s['name']}: {e}") from None
        p.specs.append(s)
        p.file_parents.append(fps)
        p.db_parents.append(dps)
    if not new:
        p.existing = _already_there(ws, p.specs)
    p.layers = _layers(p, lambda n: f"{p.specs[n]['name']!r}", err)
    return p


def _as_list(v: Any) -> list[Any]:
    return [] if v is None else (list(v) if isinstance(v, list) else [v])


def _apps(ws: Workspace, doc: campaign.CampaignFile, p: Plan, err: Any) -> dict[str, str]:
    existing = {a.name: a for a in ws.apps()}
    commands = {n: a.command for n, a in existing.items()}
    for name, entry in doc.apps.items():
        spec: dict[str, Any] = {"command": entry} if isinstance(entry, str) else entry.model_dump(exclude_unset=True)
        if "machines" in spec:
            spec["machines"] = {m: {k: v for k, v in o.items() if v is not None} for m, o in spec["machines"].items()}
        try:
            specs.check_app(name, spec["command"], {k: v for k, v in spec.items() if k != "command"})
        except UserError as e:
            raise err(("apps", name), str(e)) from None
        if name in existing:
            have = existing[name]
            for k, v in spec.items():
                if getattr(have, k) != v and not (k == "environment" and not v and not have.environment):
                    raise err(("apps", name), f"app {name!r} exists with a different {k} ({getattr(have, k)!r}); "
                                              f"change it with `sluice app modify {name}`, or use another name")
            continue
        p.new_apps[name] = spec
        commands[name] = spec["command"]
    return commands


def _parents(ws: Workspace, refs: Sequence[Any], names: dict[str, int], me: int, err: Any
             ) -> tuple[list[int], list[int]]:
    """A job's parents: names of the file's jobs, globs over them (`unw-*`), or jobs already in the database."""
    fps: set[int] = set()
    dps: set[int] = set()
    for ref in refs:
        if isinstance(ref, bool):
            raise err(f"bad parent {ref!r}: give a job name of this file or an existing job id")
        if isinstance(ref, str) and any(c in ref for c in "*?["):
            hits = [n for name, n in names.items() if fnmatch.fnmatchcase(name, ref) and n != me]
            if not hits:
                raise err(f"{ref!r} matches no job of this file")
            fps.update(hits)
        elif isinstance(ref, str) and ref in names:
            if names[ref] == me:
                raise err("a job cannot depend on itself")
            fps.add(names[ref])
        else:
            try:
                dps.add(ws.resolve(ref))
            except UserError as e:
                raise err(f"parent {ref!r} is neither a job of this file nor in the database ({e})") from None
    return sorted(fps), sorted(dps)


def _already_there(ws: Workspace, specs_: Sequence[dict[str, Any]]) -> dict[int, int]:
    """Jobs of the file that a workflow already holds under their name (a second submit of the same file)."""
    want = {(s.get("workflow") or "default", s["name"]): n for n, s in enumerate(specs_)}
    found: dict[int, int] = {}
    keys = sorted(want)
    with ws.read() as conn:
        for k in range(0, len(keys), 400):
            q = select(jobs.c.id, jobs.c.workflow, jobs.c.name).where(
                tuple_(jobs.c.workflow, jobs.c.name).in_(keys[k : k + 400])).order_by(jobs.c.id)
            for jid, wf, name in conn.execute(q):
                found.setdefault(want[(wf, name)], int(jid))
    return found


def _layers(p: Plan, label: Any, err: Any) -> list[list[int]]:
    """Layer k holds jobs whose file parents are all in earlier layers (dag.layers); leftovers are a cycle.
    Jobs already there are left out (their children take them as database parents)."""
    kids: dict[int, list[int]] = {}
    for c, ps in enumerate(p.file_parents):
        for q in ps:
            kids.setdefault(q, []).append(c)
    out, stuck = dag.layers(range(len(p.specs)), kids)
    if stuck:
        raise err(("jobs",), f"dependency cycle among {', '.join(label(n) for n in stuck[:6])}")
    return [sorted(n for n in layer if n not in p.existing) for layer in out if any(n not in p.existing
                                                                                      for n in layer)]


def add(ws: Workspace, p: Plan, progress: Any = None) -> dict[int, int]:
    """Write a checked plan: its apps, then its jobs layer by layer. Returns job ids by the file's index
    (jobs already there included).

    Everything was validated, so a failure here is the database failing midway: what was written is undone.
    """
    created: list[str] = []
    ids: dict[int, int] = dict(p.existing)
    added: list[int] = []
    try:
        for name, spec in p.new_apps.items():
            spec = dict(spec)
            ws.add_app(name, spec.pop("command"), spec.pop("description", "") or "", **spec)
            created.append(name)
        for layer in p.layers:
            for k in range(0, len(layer), 50_000):
                part = layer[k : k + 50_000]
                specs_ = [{**p.specs[n], "parents": [ids[q] for q in p.file_parents[n]] + p.db_parents[n]}
                          for n in part]
                new = ws.add_jobs(specs_)
                added += new
                ids.update(zip(part, new, strict=True))
                if progress is not None:
                    progress(len(part))
    except BaseException:
        try:
            if added:
                ws.remove(sorted(added), force=True)
            for name in reversed(created):
                ws.remove_app(name)
        except Exception:
            pass
        raise
    return ids
