"""Helpers shared by the verbs: opening the workspace, parsing K=V and JSON options, shared job options.

Only click and the standard library at import time; `sluice.api` is imported when a command runs.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sluice.errors import UserError

if TYPE_CHECKING:
    from sluice.api import Workspace

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def workspace_arg(ctx: click.Context | None = None) -> str | None:
    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    return obj.get("workspace")


def open_ws(ctx: click.Context | None = None) -> Workspace:
    """The workspace named by --workspace / $SLUICE_WORKSPACE / the current directory."""
    from sluice.api import Workspace

    return Workspace.open(workspace_arg(ctx))


def parse_kv(items: Iterable[str], what: str, *, json_values: bool = False) -> dict[str, Any]:
    """`K=V` options into a dict; with json_values, V is read as JSON when it parses (300 -> int)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, val = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"bad {what} {item!r}: write it as KEY=VALUE")
        out[key] = json_value(val) if json_values else val
    return out


def json_value(text: str) -> Any:
    """A parameter value: JSON if it is JSON (numbers, lists, true/false), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_json(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} is not valid JSON ({e.msg} at character {e.pos}): {text[:60]!r}") from None


def split_args(text: str | None) -> list[str] | None:
    if text is None:
        return None
    try:
        return shlex.split(text)
    except ValueError as e:
        raise UserError(f"cannot split --args {text!r}: {e}") from None


def drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != () and v != []}


def resolve_all(ws: Workspace, refs: Iterable[str]) -> list[int]:
    return [ws.resolve(r) for r in refs]


def job_spec_options(f: F) -> F:
    """The options `job`, `mkchild` and `qsub` share (all but --name/--app, which differ per verb)."""
    opts = [
        click.option("--workflow", "--wf", "workflow", metavar="W", help="Workflow tag (default: 'default')."),
        click.option("--wall-min", "--wall-time", "--wall-time-minutes", "wall", metavar="MIN",
                     help="Wall time: minutes (60) or HH:MM:SS (01:00:00)."),
        click.option("--num-nodes", "--nodes", "-n", "num_nodes", type=int, metavar="N", help="Nodes (default 1)."),
        click.option("--ranks-per-node", type=int, metavar="N", help="MPI ranks per node (default 1)."),
        click.option("--threads-per-rank", type=int, metavar="N", help="Threads per rank (default 1)."),
        click.option("--gpus-per-rank", type=int, metavar="N", help="GPUs per rank (default 0)."),
        click.option("--param", "-p", "params", multiple=True, metavar="K=V",
                     help="Fill the app's {K} placeholder; V is read as JSON when it parses. Repeatable."),
        click.option("--args", "args", metavar="'ARGS'", help="Extra arguments appended to the command."),
        click.option("--env", "env", multiple=True, metavar="K=V", help="Environment variable. Repeatable."),
        click.option("--tag", "tags", multiple=True, metavar="K=V", help="Tag for filtering. Repeatable."),
        click.option("--data", metavar="JSON", help="Free-form JSON data kept with the job."),
        click.option("--max-retries", type=int, metavar="N", help="Retry budget (default 3)."),
        click.option("--workdir", metavar="DIR",
                     help="Working directory (default data/WORKFLOW/NAME_ID in the workspace)."),
        click.option("--parent", "parents", multiple=True, metavar="JOB", help="A job this one waits for. Repeatable."),
        click.option("--stage-in", "--stage-in-url", "--url-in", "stage_in", multiple=True, metavar="URL",
                     help="Bring this file (path, host:path, rsync://, http(s)://, globus://; globs too) into the "
                          "working directory before the run, under its own name. Repeatable."),
        click.option("--stage-in-as", "stage_in_as", multiple=True, nargs=2, metavar="URL PATH",
                     help="Bring URL to PATH (relative to the working directory). Repeatable."),
        click.option("--from-parents", "from_parents", multiple=True, metavar="GLOB",
                     help="Bring every parent's files matching GLOB, each parent's into <name>_<id>/. Repeatable."),
        click.option("--parents-layout", type=click.Choice(["by-parent", "flat"]), default=None,
                     help="flat: --from-parents files straight into the working directory (a name given by two "
                          "parents then fails the stage-in; nothing is overwritten)."),
        click.option("--stage-out", "--stage-out-url", "--url-out", "stage_out", multiple=True, metavar="URL",
                     help="After a good run send the file named like URL's last part there. Repeatable."),
        click.option("--stage-out-as", "stage_out_as", multiple=True, nargs=2, metavar="PATH URL",
                     help="After a good run send PATH (or glob) of the working directory to URL. Repeatable."),
        click.option("--queue", metavar="Q", help="Batch queue this job must run in."),
        click.option("--machine", metavar="M", help="Machine this job must run on."),
        click.option("--json", "as_json", is_flag=True, help="Print the new job as JSON."),
        click.option("--yes", "-y", is_flag=True, hidden=True, help="Accepted for Balsam compatibility."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def stage_list(kw: Mapping[str, Any], way: str) -> list[Any]:
    """The stage_in or stage_out entries the options say (checked by the API like any job field)."""
    if way == "out":
        return [*(kw.get("stage_out") or ()), *({"src": p, "dest": u} for p, u in kw.get("stage_out_as") or ())]
    layout = kw.get("parents_layout")
    return [*(kw.get("stage_in") or ()), *({"src": u, "dest": p} for u, p in kw.get("stage_in_as") or ()),
            *({"parents": g, **({"layout": layout} if layout else {})} for g in kw.get("from_parents") or ())]


def build_spec(ws: Workspace, kw: Mapping[str, Any]) -> dict[str, Any]:
    """A job spec for `Workspace.add_jobs` from the shared options; unset options are left to the API."""
    spec: dict[str, Any] = {
        "workflow": kw.get("workflow"),
        "wall_time_min": kw.get("wall"),
        "num_nodes": kw.get("num_nodes"),
        "ranks_per_node": kw.get("ranks_per_node"),
        "threads_per_rank": kw.get("threads_per_rank"),
        "gpus_per_rank": kw.get("gpus_per_rank"),
        "params": parse_kv(kw.get("params") or (), "--param", json_values=True) or None,
        "args": split_args(kw.get("args")),
        "environment": parse_kv(kw.get("env") or (), "--env") or None,
        "tags": parse_kv(kw.get("tags") or (), "--tag") or None,
        "data": parse_json(kw.get("data"), "--data"),
        "max_retries": kw.get("max_retries"),
        "workdir": kw.get("workdir"),
        "stage_in": stage_list(kw, "in") or None,
        "stage_out": stage_list(kw, "out") or None,
        "queue": kw.get("queue"),
        "machine": kw.get("machine"),
    }
    parents = resolve_all(ws, kw.get("parents") or ())
    if parents:
        spec["parents"] = parents
    return drop_none(spec)


def filter_options(f: F) -> F:
    """The job filters `ls` and `rm` share, so both always select the same jobs."""
    opts = [
        click.option("--state", "-s", "states", multiple=True, metavar="STATE", help="Only jobs in STATE. Repeatable."),
        click.option("--workflow", "--wf", "workflows", multiple=True, metavar="W",
                     help="Only workflow W. Repeatable."),
        click.option("--app", "--application", "app", metavar="APP", help="Only jobs of app APP."),
        click.option("--tag", "tags", multiple=True, metavar="K=V", help="Only jobs tagged K=V. Repeatable."),
        click.option("--name", "name", metavar="NAME", help="Only jobs named NAME (* is a wildcard)."),
        click.option("--id", "ids", multiple=True, metavar="ID",
                     help="Only this job (id or unique prefix). Repeatable."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def build_filters(ws: Workspace, kw: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword filters for Workspace.jobs/count/summary from the shared filter options."""
    from sluice.states import parse_state

    states = [parse_state(s).value for s in kw.get("states") or ()]
    filters: dict[str, Any] = {
        "state": states or None,
        "workflow": list(kw.get("workflows") or ()) or None,
        "app": kw.get("app"),
        "tags": parse_kv(kw.get("tags") or (), "--tag") or None,
        "name": kw.get("name"),
        "ids": resolve_all(ws, kw.get("ids") or ()) or None,
    }
    return {k: v for k, v in filters.items() if v is not None}


def any_filter(kw: Mapping[str, Any]) -> bool:
    return any(kw.get(k) for k in ("states", "workflows", "app", "tags", "name", "ids"))
