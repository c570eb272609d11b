"""`sluice submit FILE`: a whole workflow (apps and jobs with dependencies) from one YAML or JSON file.

    workflow: scan                    # default workflow of the file's jobs
    apps:
      sim: {command: "simulate --temp {temp}", description: "MD run"}
      ana: "analyse --in {input}"     # a bare string is the command
    jobs:
      - {name: t300, app: sim, params: {temp: 300}, num_nodes: 2, wall_time_min: 30}
      - {name: t310, app: sim, params: {temp: 310}}
      - {name: summary, app: ana, params: {input: all}, parents: [t300, t310]}

Everything is checked before anything is written: a bad file names the entry and the problem, and changes
nothing. Jobs are added in dependency order (each layer in one transaction, with its parents known), so no
job is ever runnable before its parents are recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sluice.cli.common import CONTEXT, open_ws
from sluice.errors import UserError

if TYPE_CHECKING:
    from sluice.api import Workspace

APP_KEYS = {"command", "description", "environment", "preprocess", "postprocess", "error_handler",
            "timeout_handler", "on_error", "on_timeout", "shell"}
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
    from sluice import templates

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
        if not isinstance(name, str) or not name.strip() or "/" in name or len(name) > 255:
            raise err(entry, "bad app name: give a non-empty name without '/'")
        try:
            templates.fields(cmd)
            if not spec.get("shell"):
                templates.render(cmd, dict.fromkeys(templates.fields(cmd), "x"))
        except UserError as e:
            raise err(entry, str(e)) from None
        for key in ("on_error", "on_timeout"):
            if key in spec and spec[key] not in ("retry", "fail"):
                raise err(entry, f"{key} must be retry or fail, got {spec[key]!r}")
        if "environment" in spec and spec["environment"] is not None and not isinstance(spec["environment"], Mapping):
            raise err(entry, "environment must be a mapping")
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
    from sluice.api import JOB_FIELDS

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
        bad = set(s) - JOB_FIELDS
        if bad:
            raise err(label, f"unknown field {sorted(bad)[0]!r}; fields: {', '.join(sorted(JOB_FIELDS))}")
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
    """The API's own per-job validation, against the app's command (which may not exist yet).

    Uses `sluice.api._job_row` so the file is held to exactly the rules of `add_jobs`; see the report to the
    lead asking for a public `validate_job_spec`.
    """
    from sluice.api import _job_row

    _job_row({**spec, "app": app_name}, {app_name: {"name": app_name, "id": 0, "command": command}}, now)


def _layers(parents: Sequence[Sequence[int]], label: Any, err: Any) -> list[list[int]]:
    """Kahn's algorithm: layer k holds jobs whose file parents are all in earlier layers; leftovers cycle."""
    n = len(parents)
    indeg = [len(ps) for ps in parents]
    kids: dict[int, list[int]] = {}
    for c, ps in enumerate(parents):
        for q in ps:
            kids.setdefault(q, []).append(c)
    layer = [i for i in range(n) if indeg[i] == 0]
    out: list[list[int]] = []
    placed = 0
    while layer:
        out.append(layer)
        placed += len(layer)
        nxt = []
        for q in layer:
            for c in kids.get(q, []):
                indeg[c] -= 1
                if indeg[c] == 0:
                    nxt.append(c)
        layer = sorted(nxt)
    if placed < n:
        cyc = [i for i in range(n) if indeg[i] > 0]
        raise err("jobs", f"dependency cycle among {', '.join(label(i) for i in cyc[:6])}")
    return out


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
    path = Path(file)
    ws = open_ws()
    doc = load_file(path)
    p = plan(ws, path, doc)
    summary = (f"{len(p.new_apps)} new app(s), {len(p.specs)} job(s), {p.edges} dependency(ies) "
               f"in {len(p.layers)} layer(s)")
    if dry_run:
        click.echo(f"{path}: OK: would add {summary}")
        return
    created: list[str] = []
    ids: dict[int, int] = {}
    try:
        for name, spec in p.new_apps.items():
            spec = dict(spec)
            ws.add_app(name, spec.pop("command"), spec.pop("description", "") or "", **spec)
            created.append(name)
        for layer in p.layers:
            specs = [{**p.specs[i], "parents": [ids[q] for q in p.file_parents[i]] + p.db_parents[i]} for i in layer]
            for i, jid in zip(layer, ws.add_jobs(specs), strict=True):
                ids[i] = jid
    except BaseException:
        # everything was validated, so this is the database failing midway: undo what was written
        try:
            if ids:
                ws.remove(sorted(ids.values()), force=True)
            for name in reversed(created):
                ws.remove_app(name)
        except Exception:
            pass
        raise
    if as_json:
        from sluice.cli import render

        render.print_json({p.specs[i].get("name"): jid for i, jid in sorted(ids.items())})
        return
    click.echo(f"{path}: added {summary}")
    if ids:
        click.echo(f"job ids {min(ids.values())}..{max(ids.values())}")
