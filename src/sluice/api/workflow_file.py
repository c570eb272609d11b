"""Workflow files: a whole workflow (apps and jobs with dependencies) from one YAML or JSON file.

    workflow: scan                    # default workflow of the file's jobs
    apps:
      sim: {command: "simulate --temp {temp}", description: "MD run"}
      ana: "analyse --in {input}"     # a bare string is the command
    jobs:
      - {name: t300, app: sim, params: {temp: 300}, num_nodes: 2, wall_time_min: 30}
      - {name: t310, app: sim, params: {temp: 310}}
      - {name: summary, app: ana, params: {input: all}, parents: [t300, t310]}

Everything is checked before anything is written, by the API's own rules (specs.py): a bad file names the
entry and the problem, and changes nothing. Jobs are added in dependency order (each layer in one transaction,
with its parents known), so no job is ever runnable before its parents are recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice.api import dag, specs
from sluice.errors import UserError

if TYPE_CHECKING:
    from sluice.api.workspace import Workspace

APP_KEYS = {"command", "description", *specs.APP_OPTIONS}
TOP_KEYS = {"workflow", "apps", "jobs"}


class FileError(UserError):
    pass


def load_file(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except ValueError as e:
            raise UserError(f"{path}: not valid JSON: {e}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())
        raise UserError(f"{path}: not valid YAML: {first[:300]}") from None


class Plan:
    """What a file asks for, validated: apps to create, and jobs in layers of dependency order."""

    def __init__(self) -> None:
        self.new_apps: dict[str, dict[str, Any]] = {}
        self.layers: list[list[int]] = []  # indexes into specs
        self.specs: list[dict[str, Any]] = []
        self.file_parents: list[list[int]] = []  # parents among the file's jobs, by index
        self.db_parents: list[list[int]] = []  # parents already in the database, by id

    @property
    def edges(self) -> int:
        return sum(map(len, self.file_parents)) + sum(map(len, self.db_parents))


def plan(ws: Workspace, path: Path, doc: Any) -> Plan:
    """Check a loaded file against the workspace; what it would add, or a UserError naming the entry."""
    where = str(path)

    def err(entry: str, problem: str) -> UserError:
        return UserError(f"{where}: {entry}: {problem}")

    if not isinstance(doc, Mapping):
        raise UserError(f"{where}: expected a mapping with `apps:` and `jobs:`, got {type(doc).__name__}")
    extra = set(doc) - TOP_KEYS
    if extra:
        raise err(f"key {sorted(extra)[0]!r}", f"unknown; the file may have {', '.join(sorted(TOP_KEYS))}")
    p = Plan()
    default_wf = doc.get("workflow")
    if default_wf is not None and not isinstance(default_wf, str):
        raise err("workflow", "must be a string")

    # ---- apps
    raw_apps = doc.get("apps") or {}
    if not isinstance(raw_apps, Mapping):
        raise err("apps", "must be a mapping of app names to {command: ..., ...}")
    existing = {a.name: a for a in ws.apps()}
    commands: dict[str, str] = {n: a.command for n, a in existing.items()}
    for name, spec in raw_apps.items():
        entry = f"apps.{name}"
        if isinstance(spec, str):
            spec = {"command": spec}
        if not isinstance(spec, Mapping):
            raise err(entry, "must be a command string or a mapping with `command:`")
        bad = set(spec) - APP_KEYS
        if bad:
            raise err(entry, f"unknown key {sorted(bad)[0]!r}; app keys: {', '.join(sorted(APP_KEYS))}")
        cmd = spec.get("command")
        if not isinstance(cmd, str) or not cmd.strip():
            raise err(entry, "needs a `command:` string, e.g. 'simulate --temp {temp}'")
        try:
            specs.check_app(name, cmd, {k: v for k, v in spec.items() if k != "command"})
        except UserError as e:
            raise err(entry, str(e)) from None
        if name in existing:
            have = existing[name]
            for k, v in spec.items():
                if getattr(have, k) != v and not (k == "environment" and not v and not have.environment):
                    raise err(entry, f"app {name!r} exists with a different {k} ({getattr(have, k)!r}); "
                                     f"change it with `sluice app modify {name}`, or use another name")
            continue
        p.new_apps[str(name)] = dict(spec)
        commands[str(name)] = cmd

    # ---- jobs
    raw_jobs = doc.get("jobs") or []
    if not isinstance(raw_jobs, list):
        raise err("jobs", "must be a list of job specs")
    by_name: dict[str, list[int]] = {}
    for i, spec in enumerate(raw_jobs):
        if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
            by_name.setdefault(spec["name"], []).append(i)
    now = time.time()
    for i, spec in enumerate(raw_jobs):
        label = f"jobs[{i}]" + (f" ({spec.get('name')})" if isinstance(spec, Mapping) and spec.get("name") else "")
        if not isinstance(spec, Mapping):
            raise err(label, "must be a mapping with name:, app:, ...")
        s = dict(spec)
        bad = set(s) - specs.JOB_FIELDS
        if bad:
            raise err(label, f"unknown field {sorted(bad)[0]!r}; fields: {', '.join(sorted(specs.JOB_FIELDS))}")
        if default_wf and not s.get("workflow"):
            s["workflow"] = default_wf
        app_name = s.get("app")
        if not isinstance(app_name, str) or not app_name:
            raise err(label, "needs `app:`")
        if app_name not in commands:
            raise err(label, f"unknown app {app_name!r}; define it under `apps:` or register it with `sluice app add`")
        if isinstance(s.get("args"), str):
            import shlex

            s["args"] = shlex.split(s["args"])
        raw_parents = s.pop("parents", None) or []
        if not isinstance(raw_parents, list):
            raw_parents = [raw_parents]
        fps: list[int] = []
        dps: list[int] = []
        for ref in raw_parents:
            if isinstance(ref, str) and ref in by_name:
                if len(by_name[ref]) > 1:
                    raise err(label, f"parent {ref!r} names {len(by_name[ref])} jobs of the file; names must be unique")
                if by_name[ref][0] == i:
                    raise err(label, "a job cannot depend on itself")
                fps.append(by_name[ref][0])
            elif isinstance(ref, int) and not isinstance(ref, bool):
                if not _exists(ws, ref):
                    raise err(label, f"parent job {ref} does not exist; see `sluice ls`")
                dps.append(ref)
            elif isinstance(ref, str):
                try:
                    dps.append(ws.resolve(ref))
                except UserError as e:
                    raise err(label, f"parent {ref!r} is neither a job of this file nor in the database ({e})") \
                        from None
            else:
                raise err(label, f"bad parent {ref!r}: give a job name of this file or an existing job id")
        try:
            _validate_spec(s, app_name, commands[app_name], now)
        except UserError as e:
            raise err(label, str(e)) from None
        p.specs.append(s)
        p.file_parents.append(sorted(set(fps)))
        p.db_parents.append(sorted(set(dps)))
    p.layers = _layers(p.file_parents, lambda i: f"jobs[{i}] ({p.specs[i].get('name')})", err)
    return p


def _exists(ws: Workspace, ref: int) -> bool:
    try:
        ws.job(ref)
    except UserError:
        return False
    return True


def _validate_spec(spec: Mapping[str, Any], app_name: str, command: str, now: float) -> None:
    """The API's own per-job validation, against the app's command (which may not exist yet)."""
    specs.job_row({**spec, "app": app_name}, {app_name: {"name": app_name, "id": 0, "command": command}}, now)


def _layers(parents: Sequence[Sequence[int]], label: Any, err: Any) -> list[list[int]]:
    """Layer k holds jobs whose file parents are all in earlier layers (dag.layers); leftovers are a cycle."""
    kids: dict[int, list[int]] = {}
    for c, ps in enumerate(parents):
        for q in ps:
            kids.setdefault(q, []).append(c)
    out, stuck = dag.layers(range(len(parents)), kids)
    if stuck:
        raise err("jobs", f"dependency cycle among {', '.join(label(i) for i in stuck[:6])}")
    return [sorted(layer) for layer in out]


def add(ws: Workspace, p: Plan) -> dict[int, int]:
    """Write a checked plan: its apps, then its jobs layer by layer. Returns job ids by the file's index.

    Everything was validated, so a failure here is the database failing midway: what was written is undone.
    """
    created: list[str] = []
    ids: dict[int, int] = {}
    try:
        for name, spec in p.new_apps.items():
            spec = dict(spec)
            ws.add_app(name, spec.pop("command"), spec.pop("description", "") or "", **spec)
            created.append(name)
        for layer in p.layers:
            specs_ = [{**p.specs[i], "parents": [ids[q] for q in p.file_parents[i]] + p.db_parents[i]}
                      for i in layer]
            for i, jid in zip(layer, ws.add_jobs(specs_), strict=True):
                ids[i] = jid
    except BaseException:
        try:
            if ids:
                ws.remove(sorted(ids.values()), force=True)
            for name in reversed(created):
                ws.remove_app(name)
        except Exception:
            pass
        raise
    return ids
