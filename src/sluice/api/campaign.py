"""Campaign files as written: their schema (pydantic), where each entry sits in the file, and sweeps expanded.

    workflow: hep
    apps: {gen: "gen --seed {seed}", unw: "unweight", merge: "merge"}
    jobs:
      - {name: "gen-{seed}", app: gen, sweep: {seed: [1, 2, 3, 4]}}                    # one job per point
      - {name: "unw-{seed}", app: unw, sweep: {seed: [1, 2, 3, 4]}, after: "gen-{seed}"}  # each after its own
      - {name: merge, app: merge, after: "unw-*"}                                        # fan-in

A `sweep` of several keys gives every combination; `zip` pairs lists point by point (and combines with the
sweep); a list may be `{range: [start, stop, step]}`. A point's values fill `{key}` in the job's string fields
and become the params its app's command asks for. Nothing here touches the database: workflow_file.py checks
the expanded jobs against the workspace.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sluice import templates
from sluice.errors import UserError

Scalar = str | int | float | bool


class Override(BaseModel):
    """What an app changes on one machine (`machine = "..."` in sluice.toml)."""

    model_config = ConfigDict(extra="forbid")
    command: str | None = None
    preamble: str | None = None
    environment: dict[str, str] | None = None


class AppEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    command: str
    description: str = ""
    environment: dict[str, str] | None = None
    preprocess: str | None = None
    postprocess: str | None = None
    error_handler: str | None = None
    timeout_handler: str | None = None
    on_error: str = "retry"
    on_timeout: str = "retry"
    shell: bool = False
    preamble: str | None = None
    machines: dict[str, Override] | None = None


class JobEntry(BaseModel):
    """One entry of `jobs:`: a job, or one job per point of its sweep. Job fields are checked by the API's own
    rules (specs.job_row) after expansion; here only the shape."""

    model_config = ConfigDict(extra="allow")
    name: str
    app: str
    sweep: dict[str, list[Scalar] | dict[str, list[int]]] | None = None
    zip_: dict[str, list[Scalar]] | None = Field(default=None, alias="zip")
    after: str | int | list[str | int] | None = None
    parents: str | int | list[str | int] | None = None

    @field_validator("sweep")
    @classmethod
    def _ranges(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, vals in (v or {}).items():
            if isinstance(vals, dict):
                r = vals.get("range")
                if set(vals) != {"range"} or not isinstance(r, list) or not 2 <= len(r) <= 3:
                    raise ValueError(f"{key}: give a list of values or {{range: [start, stop, step]}}")
                if len(r) == 3 and r[2] == 0:
                    raise ValueError(f"{key}: a range's step cannot be 0")
        return v


class CampaignFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workflow: str | None = None
    apps: dict[str, str | AppEntry] = {}
    jobs: list[JobEntry] = []


def load(path: Path) -> tuple[CampaignFile, dict[tuple[Any, ...], int]]:
    """Read and check a YAML or JSON campaign file; the model and the line of every entry (by its path)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    lines: dict[tuple[Any, ...], int] = {}
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        if path.suffix.lower() == ".json":
            try:
                doc, node = json.loads(text), None
            except ValueError as je:
                raise UserError(f"{path}: not valid JSON: {je}") from None
        else:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}" if mark is not None else ""
            raise UserError(f"{path}{at}: not valid YAML: {' '.join(str(getattr(e, 'problem', e)).split())}") \
                from None
    if node is not None:
        _lines(node, (), lines)
    if not isinstance(doc, Mapping):
        raise UserError(f"{path}: expected a mapping with `apps:` and `jobs:`, got {type(doc).__name__}")
    try:
        return CampaignFile.model_validate(doc), lines
    except ValidationError as e:
        # a union (an app is a string or a mapping) fails once per branch: the deepest error is the one meant
        err = max(e.errors(), key=lambda x: len(x["loc"]))
        loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and ("[" in x or x in _UNION_TAGS)))
        raise UserError(f"{where(path, lines, loc)}: {_field(loc)}: {_problem(err)}") from None


_UNION_TAGS = {"str", "int", "float", "bool", "AppEntry", "list[union[str,int]]", "dict[str,list[int]]"}


def _lines(node: yaml.Node, at: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[at] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*at, key)] = k.start_mark.line + 1
            _lines(v, (*at, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, (*at, i), out)


def where(path: Path, lines: Mapping[tuple[Any, ...], int], loc: tuple[Any, ...]) -> str:
    """`file:line` of the deepest entry of loc that the file has."""
    for n in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:n]))
        if line is not None:
            return f"{path}:{line}"
    return str(path)


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for x in loc:
        out += f"[{x}]" if isinstance(x, int) else (f".{x}" if out else str(x))
    return out or "file"


def _problem(err: Mapping[str, Any]) -> str:
    if err["type"] == "extra_forbidden":
        return "unknown key; see `sluice submit --help` for the keys a campaign file may have"
    if err["type"] == "missing":
        return "required"
    return str(err["msg"]).replace("Value error, ", "")


def points(job: JobEntry) -> Iterator[dict[str, Any]]:
    """The sweep's points: the product of the sweep's lists, each combined with the zip's rows."""
    axes = [[(k, v) for v in _values(vals)] for k, vals in (job.sweep or {}).items()]
    zipped = job.zip_ or {}
    lengths = {len(v) for v in zipped.values()}
    if len(lengths) > 1:
        raise ValueError(f"zip lists must have one length, got {sorted(lengths)}")
    rows = [dict(zip(zipped, vals, strict=True)) for vals in zip(*zipped.values(), strict=True)] if zipped else [{}]
    for combo in itertools.product(*axes):
        for row in rows:
            yield {**dict(combo), **row}


def _values(vals: Any) -> list[Any]:
    if isinstance(vals, dict):
        return list(range(*vals["range"]))
    return list(vals)


def fill(value: Any, point: Mapping[str, Any]) -> Any:
    """`{key}` in strings (and in lists and mappings of them) replaced by the point's values."""
    if not point:
        return value
    if isinstance(value, str):
        if "{" not in value:
            return value
        try:
            return value.format_map(_Strict(point))
        except (ValueError, IndexError) as e:
            raise ValueError(f"cannot fill {value!r}: {e}") from None
    if isinstance(value, list):
        return [fill(v, point) for v in value]
    if isinstance(value, dict):
        return {k: fill(v, point) for k, v in value.items()}
    return value


class _Strict(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"  # a placeholder the sweep does not give stays for the app's params


def app_params(command: str, point: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """The job's params: the sweep's values its app's command asks for, then the entry's own."""
    wanted = templates.fields(command)
    return {**{k: v for k, v in point.items() if k in wanted}, **params}
