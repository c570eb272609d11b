"""The records of the job database, declared once: each field's type, column kind, default and who may set it.

The tables (`store/models.py`), the API's records and checks, the launcher's claims and the CLI's field lists
are all derived from these two dataclasses, so a new job field is one line here (and a migration). Nothing
here imports SQLAlchemy: the CLI's fast paths read it too.

Column kinds: ``id`` (BIGINT, INTEGER on SQLite), ``str`` (VARCHAR of `size`), ``text``, ``int``, ``float``,
``bool`` and ``json``. ``user`` fields are what a job spec may give and `modify` may change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def column(kind: str, default: Any = MISSING, *, size: int | None = None, null: bool = True, user: bool = False,
           empty: Callable[[], Any] | None = None, doc: str = "") -> Any:
    """A dataclass field that also describes its column. `empty` makes a JSON column read as {} or [] when NULL."""
    meta = {"kind": kind, "size": size, "null": null, "user": user, "empty": empty, "doc": doc}
    if empty is not None:
        return field(default_factory=empty, metadata=meta)
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(kw_only=True, frozen=True)
class AppRow:
    """An application: a command template whose `{param}` placeholders jobs fill in."""

    id: int = column("id", null=False)
    name: str = column("str", size=255, null=False, doc="unique; letters, digits, '_', '-', '.'")
    command: str = column("text", null=False)
    description: str = column("text", "", null=False)
    environment: dict[str, str] | None = column("json", None)
    preprocess: str | None = column("text", None)
    postprocess: str | None = column("text", None)
    error_handler: str | None = column("text", None)
    timeout_handler: str | None = column("text", None)
    on_error: str = column("str", "retry", size=16, null=False)
    on_timeout: str = column("str", "retry", size=16, null=False)
    shell: bool = column("bool", False, null=False)
    created_at: float = column("float", 0.0, null=False)
    preamble: str | None = column("text", None, doc="shell lines run before the command: module load, source ...")
    machines: dict[str, Any] | None = column("json", None, doc="per-machine overrides of command and preamble")


@dataclass(kw_only=True)
class JobRow:
    """One task of the campaign, as stored. Defaults are what a job spec that leaves a field out gets."""

    id: int = column("id", null=False)
    name: str = column("str", size=255, null=False, user=True)
    workflow: str = column("str", "default", size=255, null=False, user=True)
    app_id: int = column("id", null=False)
    params: dict[str, Any] = column("json", empty=dict, user=True)
    args: list[str] = column("json", empty=list, user=True)
    workdir: str | None = column("str", None, size=1024, user=True, doc="NULL: data/<workflow>/<name>_<id>")
    num_nodes: int = column("int", 1, null=False, user=True)
    ranks_per_node: int = column("int", 1, null=False, user=True)
    threads_per_rank: int = column("int", 1, null=False, user=True)
    gpus_per_rank: int = column("int", 0, null=False, user=True)
    wall_time_min: float | None = column("float", None, user=True)
    environment: dict[str, str] = column("json", empty=dict, user=True)
    tags: dict[str, str] = column("json", empty=dict, user=True)
    data: Any = column("json", None, user=True)
    stage_in: list[Any] = column("json", empty=list, user=True)
    stage_out: list[Any] = column("json", empty=list, user=True)
    max_retries: int = column("int", 3, null=False, user=True)
    retry_count: int = column("int", 0, null=False)
    state: str = column("str", size=20, null=False)
    state_message: str | None = column("text", None)
    queue: str | None = column("str", None, size=64, user=True)
    machine: str | None = column("str", None, size=64, user=True)
    session_id: int | None = column("id", None, doc="the launcher session holding the job (the claim)")
    created_at: float = column("float", null=False)
    updated_at: float = column("float", null=False)
    priority: int = column("int", 0, null=False, user=True, doc="higher starts first; 0 is the default")
    deadline: float | None = column("float", None, user=True, doc="epoch seconds by which the job should end")


@dataclass(frozen=True)
class Col:
    """One field of a record, as the layers above need it."""

    name: str
    kind: str
    size: int | None
    null: bool
    user: bool
    empty: Callable[[], Any] | None
    default: Any
    doc: str

    @property
    def stored_default(self) -> Any:
        """What the database holds when a spec leaves the field out (JSON columns: NULL, read back as empty)."""
        return None if self.kind == "json" else self.default


def columns(cls: type) -> tuple[Col, ...]:
    return tuple(Col(f.name, f.metadata["kind"], f.metadata["size"], f.metadata["null"], f.metadata["user"],
                     f.metadata["empty"], None if f.default is MISSING else f.default, f.metadata["doc"])
                 for f in fields(cls))


APP_COLUMNS = columns(AppRow)
JOB_COLUMNS = columns(JobRow)
JOB_NAMES = tuple(c.name for c in JOB_COLUMNS)
USER_FIELDS = tuple(c.name for c in JOB_COLUMNS if c.user)
"""What a job spec may give (besides `app` and `parents`) and `modify` may change (besides `state`)."""
JSON_FIELDS = frozenset(c.name for c in JOB_COLUMNS if c.kind == "json")
INT_FIELDS = frozenset(c.name for c in JOB_COLUMNS if c.kind == "int" and c.user)
JSON_EMPTY: dict[str, Callable[[], Any]] = {c.name: c.empty for c in JOB_COLUMNS if c.empty is not None}
STORED_DEFAULTS: dict[str, Any] = {c.name: c.stored_default for c in JOB_COLUMNS
                                   if c.name not in ("id", "name", "workflow", "app_id", "params", "state",
                                                     "created_at", "updated_at")}
URGENT_SQL = "priority > 0 OR deadline IS NOT NULL"
"""The jobs the claim takes first (through a partial index holding only them: the others cost it nothing)."""
"""The stored values of a job whose spec gave only name, workflow, app and params (the common bulk case)."""
APP_FIELDS = tuple(c.name for c in APP_COLUMNS)
APP_SETTABLE = tuple(n for n in APP_FIELDS if n not in ("id", "name", "created_at"))
