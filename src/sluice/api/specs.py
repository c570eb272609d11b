"""Checking what users give before anything is written: names, job specs and app definitions.

`job_row` runs once per job (100,000 in one `add_jobs` is normal), so the common spec (a few fields) takes
fast paths; its errors are exactly those of the slow checks. Workflow files use the same functions, so a file
is held to the rules of the API.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sluice import templates
from sluice.errors import UserError
from sluice.schema import INT_FIELDS, STORED_DEFAULTS, USER_FIELDS
from sluice.states import RETRY_POLICIES
from sluice.timefmt import wall_minutes
from sluice.transfers import entries

JOB_FIELDS = frozenset({*USER_FIELDS, "app", "parents"})
"""What a job spec may hold."""
MODIFIABLE = (*USER_FIELDS, "state")
"""What `modify` may change."""
APP_OPTIONS = frozenset({"environment", "preprocess", "postprocess", "error_handler", "timeout_handler",
                         "on_error", "on_timeout", "shell", "preamble", "machines"})
_OVERRIDES = frozenset({"command", "preamble", "environment"})
"""An app's settings besides its name, command and description."""

_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
_PLAIN_FIELDS = frozenset({"name", "app", "workflow", "params", "parents"})
_ZERO_OK = frozenset({"gpus_per_rank", "max_retries", "priority"})


def check_app_name(name: Any) -> str:
    """App names are identifiers that users type and scripts pass around: no spaces, no shell characters."""
    if not isinstance(name, str) or not _APP_NAME.match(name):
        raise UserError(f"bad app name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter "
                        "or digit (up to 255 characters)")
    return name


def check_name(name: str, what: str) -> None:
    if not name or not name.strip() or "/" in name or len(name) > 255:
        raise UserError(f"bad {what} {name!r}: give a non-empty name without '/', up to 255 characters")


def check_app(name: Any, command: Any, options: Mapping[str, Any]) -> None:
    """An app definition: its name (None: an app already registered), a command whose template parses, known
    options with valid values."""
    if name is not None:
        check_app_name(name)
    if not isinstance(command, str) or not command.strip():
        raise UserError("an app needs a command, e.g. --command 'simulate --temp {temp}'")
    fields = templates.fields(command)
    if not options.get("shell"):
        templates.render(command, dict.fromkeys(fields, "x"))
    bad = sorted(set(options) - APP_OPTIONS - {"description"})
    if bad:
        raise UserError(f"unknown app setting {bad[0]!r}; settings: {', '.join(sorted(APP_OPTIONS))}")
    for key in ("on_error", "on_timeout"):
        if key in options and options[key] not in RETRY_POLICIES:
            raise UserError(f"{key} must be one of {', '.join(RETRY_POLICIES)}, got {options[key]!r}")
    env = options.get("environment")
    if env is not None and not isinstance(env, Mapping):
        raise UserError("an app's environment must be a mapping of names to values")
    if options.get("preamble") is not None and not isinstance(options["preamble"], str):
        raise UserError("an app's preamble is shell lines as one string, e.g. 'module load cuda'")
    machines = options.get("machines")
    if machines is not None:
        if not isinstance(machines, Mapping) or not all(isinstance(v, Mapping) for v in machines.values()):
            raise UserError("machines maps a machine name to {command, preamble, environment} overrides")
        for m, over in machines.items():
            bad = sorted(set(over) - _OVERRIDES)
            if bad:
                raise UserError(f"machines.{m}: unknown key {bad[0]!r}; an override sets "
                                f"{', '.join(sorted(_OVERRIDES))}")
            if over.get("command"):
                templates.fields(over["command"])


def positive_int(spec: Mapping[str, Any], key: str, default: int, minimum: int = 1) -> int:
    v = spec.get(key)
    if v is None:
        return default
    if type(v) is int and v >= minimum:  # the common case, without the costlier checks below
        return v
    try:
        n = int(v)
        if isinstance(v, float) and v != n:
            raise ValueError
    except (TypeError, ValueError):
        raise UserError(f"{key.replace('_', '-')} must be a whole number, got {v!r}") from None
    if n < minimum:
        raise UserError(f"{key.replace('_', '-')} must be at least {minimum}, got {v!r}")
    return n


def _mapping(spec: Mapping[str, Any], key: str) -> dict[str, Any] | None:
    v = spec.get(key)
    if v is None or v == {}:
        return None
    if not isinstance(v, Mapping):
        raise UserError(f"{key} must be a mapping of names to values, got {type(v).__name__}")
    return {str(k): (str(x) if key in ("environment", "tags") else x) for k, x in v.items()}


def job_id_of(x: Any) -> int:
    """A job id from an id or anything with an `.id` (a Job)."""
    return int(x.id) if hasattr(x, "id") else int(x)


def job_row(s: Mapping[str, Any], app_rows: Mapping[str, dict[str, Any]], now: float
            ) -> tuple[dict[str, Any], list[int]]:
    """Validate one job spec into a jobs row (plus its parent ids); raises UserError on any bad field.

    The fast paths: one C-level subset test for unknown fields, a per-app cached placeholder set, and no
    per-field work for fields the spec does not give.
    """
    keys = s.keys()
    if not keys <= JOB_FIELDS:
        unknown = keys - JOB_FIELDS
        raise UserError(f"unknown job field(s) {', '.join(sorted(unknown))}; fields: {', '.join(sorted(JOB_FIELDS))}")
    get = s.get
    name = get("name") or ""
    if type(name) is not str or "/" in name or not name.strip() or len(name) > 255:
        check_name(str(name), "job name")
    workflow = get("workflow") or "default"
    if workflow != "default" and (type(workflow) is not str or "/" in workflow or not workflow.strip()
                                  or len(workflow) > 255):
        check_name(str(workflow), "workflow")
    app_row = app_rows[s["app"]]
    want = app_row.get("_fields")
    if want is None:
        want = app_row["_fields"] = frozenset(templates.fields(app_row["command"]))
    params = get("params") or {}
    if params.keys() != want:
        templates.check_params(app_row["name"], app_row["command"], params)
    if keys <= _PLAIN_FIELDS:  # name, app, workflow, params, parents only: everything else is a default
        row = {"_app": app_row["name"], "name": name, "workflow": workflow, "app_id": app_row["id"],
               "params": (params if type(params) is dict else dict(params)) or None, **STORED_DEFAULTS,
               "created_at": now, "updated_at": now}
    else:
        row = {"_app": app_row["name"], "name": name, "workflow": workflow, "app_id": app_row["id"],
               **STORED_DEFAULTS, "params": dict(params) or None, **_given(s), "created_at": now, "updated_at": now}
    ps = get("parents")
    parents = sorted({job_id_of(p) for p in ps}) if ps else []
    return row, parents


def _given(s: Mapping[str, Any]) -> dict[str, Any]:
    """The stored values of the optional fields a spec gives, each checked."""
    get = s.get
    out: dict[str, Any] = {}
    args = get("args") or None
    if isinstance(args, str):
        raise UserError("args must be a list of strings (the CLI splits --args for you)")
    out["args"] = [str(a) for a in args] if args else None
    for key in ("stage_in", "stage_out"):
        v = get(key)
        if v is not None and not isinstance(v, list | tuple):
            raise UserError(f"{key} must be a list of URLs or {{src, dest}} entries")
        out[key] = [dict(x) if isinstance(x, Mapping) else x for x in v] if v else None
    entries.check(out["stage_in"], out["stage_out"])
    for key in INT_FIELDS:
        default = STORED_DEFAULTS[key]
        out[key] = positive_int(s, key, default, minimum=0 if key in _ZERO_OK else 1)
    wall = get("wall_time_min")
    out["wall_time_min"] = wall_minutes(wall) if wall is not None else None
    out["workdir"] = str(s["workdir"]) if get("workdir") else None
    out["environment"] = _mapping(s, "environment") if get("environment") else None
    out["tags"] = _mapping(s, "tags") if get("tags") else None
    out["data"] = get("data")
    out["deadline"] = _deadline(get("deadline"))
    out["queue"] = get("queue")
    out["machine"] = get("machine")
    return out


def _deadline(v: Any) -> float | None:
    """A deadline as epoch seconds (the CLI turns `--deadline MIN` into one)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise UserError(f"deadline must be a time in epoch seconds (the CLI's --deadline takes minutes from now), "
                        f"got {v!r}")
    return float(v)
