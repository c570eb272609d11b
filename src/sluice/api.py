"""The Python API. The CLI and the web dashboard call this; nothing above it touches the ORM tables directly.

    ws = Workspace.open()                       # --workspace, $SLUICE_WORKSPACE, or cwd and its parents
    ws.add_app("sim", "simulate --temp {temp}")
    a = ws.add_job("a", app="sim", params={"temp": 300})
    b = ws.add_job("b", app="sim", params={"temp": 310}, parents=[a])
    ws.jobs(state="READY", workflow="scan")

Every bad input raises UserError with one line naming the problem and the fix, before anything is written.
"""

from __future__ import annotations

import json
import operator
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Double,
    Engine,
    String,
    and_,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from sluice import config, db, templates
from sluice.errors import UserError
from sluice.models import apps, batch_jobs, events, job_parents, jobs, launcher_sessions
from sluice.states import (
    END,
    Change,
    S,
    State,
    apply,
    check_path,
    children_of,
    default_actor,
    fail_children,
    parse_state,
    ready_path,
    release_children,
    states_of,
)
from sluice.timefmt import wall_minutes

ENV_JOB_ID = "SLUICE_JOB_ID"
POLICIES = ("retry", "fail")
CHUNK = 900  # ids per IN (...) list: under SQLite's old 999-variable limit


@dataclass(frozen=True)
class App:
    id: int
    name: str
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
    created_at: float = 0.0

    @property
    def parameters(self) -> list[str]:
        return sorted(templates.fields(self.command))


@dataclass(frozen=True)
class Event:
    id: int
    job_id: int
    from_state: str | None
    to_state: str
    timestamp: float
    actor: str
    message: str | None
    data: Any


@dataclass
class Job:
    """A snapshot of one job's row; `.parents`, `.children` and `.history` query the database when read."""

    id: int
    name: str
    workflow: str
    app_id: int
    app: str
    params: dict[str, Any]
    args: list[str]
    workdir: str | None
    num_nodes: int
    ranks_per_node: int
    threads_per_rank: int
    gpus_per_rank: int
    wall_time_min: float | None
    environment: dict[str, str]
    tags: dict[str, str]
    data: Any
    stage_in: list[Any]
    stage_out: list[Any]
    max_retries: int
    retry_count: int
    state: str
    state_message: str | None
    queue: str | None
    machine: str | None
    session_id: int | None
    created_at: float
    updated_at: float
    _ws: Workspace | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> Path:
        """The working directory: the job's own, or data/<workflow>/<name>_<id> in the workspace."""
        assert self._ws is not None
        return job_path(self._ws.config.data_dir, self.workdir, self.workflow, self.name, self.id)

    @property
    def parents(self) -> list[Job]:
        assert self._ws is not None
        return self._ws.parents(self.id)

    @property
    def children(self) -> list[Job]:
        assert self._ws is not None
        return self._ws.children(self.id)

    @property
    def history(self) -> list[Event]:
        assert self._ws is not None
        return self._ws.history(self.id)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        if self._ws is not None:
            d["path"] = str(self.path)
        return d


def job_path(data_dir: Path, workdir: str | None, workflow: str, name: str, job_id: int) -> Path:
    if workdir:
        p = Path(workdir)
        return p if p.is_absolute() else data_dir / p
    return data_dir / workflow / f"{name}_{job_id}"


JOB_COLUMNS = [c for c in jobs.c]
_JSON_DEFAULTS = {"params": dict, "args": list, "environment": dict, "tags": dict, "stage_in": list,
                  "stage_out": list}


def _job(row: Any, ws: Workspace | None) -> Job:
    d = dict(row._mapping)
    for k, make in _JSON_DEFAULTS.items():
        if d.get(k) is None:
            d[k] = make()
    return Job(**d, _ws=ws)


def _app(row: Any) -> App:
    return App(**dict(row._mapping))


class Workspace:
    """A campaign: a directory with sluice.toml, data/, logs/, and the job database it names."""

    def __init__(self, cfg: config.Config, engine: Engine, actor: str | None = None) -> None:
        self.config = cfg
        self.path = cfg.path
        self.engine = engine
        self.actor = actor or default_actor()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, *, actor: str | None = None) -> Workspace:
        """Open an existing workspace; the database must answer and its schema be current."""
        root = config.find_workspace(path)
        cfg = config.load(root)
        return cls(cfg, db.connect(cfg.db_url), actor)

    @classmethod
    def create(cls, path: str | os.PathLike[str], db_url: str | None = None, *,
               scheduler: str = "local") -> Workspace:
        """Make a new workspace at path (created if missing) and its schema."""
        root = Path(path).expanduser().resolve()
        if (root / config.CONFIG_NAME).exists():
            raise UserError(f"{root} is already a sluice workspace; use it, or pick another PATH")
        if root.exists() and not root.is_dir():
            raise UserError(f"{root} exists and is not a directory")
        url = db_url or config.default_db_url(root)
        made = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        eng = db.engine(config._resolve_sqlite(url, root))
        try:
            with eng.connect():
                pass
        except Exception as e:
            if made:
                root.rmdir()
            msg = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
            raise UserError(f"cannot open database {db.redact(url)}: {msg}") from None
        (root / "data").mkdir(exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        db.upgrade(eng)
        config.write_new(root, db_url, scheduler)
        cfg = config.load(root)
        return cls(cfg, eng)

    def write(self) -> Any:
        return db.write(self.engine)

    def read(self) -> Any:
        return db.read(self.engine)

    # ------------------------------------------------------------------ apps
    def add_app(self, name: str, command: str, description: str = "", *,
                environment: Mapping[str, str] | None = None, preprocess: str | None = None,
                postprocess: str | None = None, error_handler: str | None = None,
                timeout_handler: str | None = None, on_error: str = "retry", on_timeout: str = "retry",
                shell: bool = False) -> App:
        """Register an application; its command's `{param}` placeholders are what jobs must fill."""
        _check_name(name, "app name")
        if not command.strip():
            raise UserError("an app needs a command, e.g. --command 'simulate --temp {temp}'")
        templates.fields(command)
        if not shell:
            templates.render(command, dict.fromkeys(templates.fields(command), "x"))
        for what, val in (("on_error", on_error), ("on_timeout", on_timeout)):
            if val not in POLICIES:
                raise UserError(f"{what} must be one of {', '.join(POLICIES)}, got {val!r}")
        row = {"name": name, "command": command, "description": description,
               "environment": dict(environment) if environment else None, "preprocess": preprocess,
               "postprocess": postprocess, "error_handler": error_handler, "timeout_handler": timeout_handler,
               "on_error": on_error, "on_timeout": on_timeout, "shell": shell, "created_at": time.time()}
        with self.write() as conn:
            if conn.execute(select(apps.c.id).where(apps.c.name == name)).first():
                raise UserError(f"app {name!r} exists already; change it with `sluice app modify {name}`")
            conn.execute(insert(apps).values(**row))
        return self.app(name)

    def app(self, name: str) -> App:
        with self.read() as conn:
            row = conn.execute(select(apps).where(apps.c.name == name)).first()
        if row is None:
            raise UserError(f"unknown app {name!r}; see `sluice app ls`, or register it with `sluice app add`")
        return _app(row)

    def apps(self) -> list[App]:
        with self.read() as conn:
            return [_app(r) for r in conn.execute(select(apps).order_by(apps.c.name))]

    def modify_app(self, name: str, **changes: Any) -> App:
        app = self.app(name)
        allowed = {f.name for f in fields(App)} - {"id", "created_at", "name"}
        bad = sorted(set(changes) - allowed)
        if bad:
            raise UserError(f"cannot change app field(s) {', '.join(bad)}; fields: {', '.join(sorted(allowed))}")
        if "command" in changes:
            templates.fields(changes["command"])
        for key in ("on_error", "on_timeout"):
            if key in changes and changes[key] not in POLICIES:
                raise UserError(f"{key} must be one of {', '.join(POLICIES)}")
        with self.write() as conn:
            conn.execute(update(apps).where(apps.c.id == app.id).values(**changes))
        return self.app(name)

    def remove_app(self, name: str) -> None:
        app = self.app(name)
        with self.write() as conn:
            n = conn.execute(select(func.count()).select_from(jobs).where(jobs.c.app_id == app.id)).scalar()
            if n:
                raise UserError(f"app {name!r} is used by {n} job(s); remove them first (`sluice rm --app {name}`)")
            conn.execute(delete(apps).where(apps.c.id == app.id))

    # ------------------------------------------------------------------ jobs
    def add_job(self, name: str, app: str, *, parents: Iterable[int | Job] = (), **spec: Any) -> Job:
        """Add one job; see add_jobs for the fields. Parents are job ids or Job objects."""
        (job_id,) = self.add_jobs([{"name": name, "app": app, "parents": list(parents), **spec}])
        return self.job(job_id)

    def add_jobs(self, specs: Iterable[Mapping[str, Any]]) -> list[int]:
        """Add many jobs in one transaction and return their ids, in order.

        Fields: name, app, workflow, params, args, workdir, num_nodes, ranks_per_node, threads_per_rank,
        gpus_per_rank, wall_time_min, environment, tags, data, max_retries, stage_in, stage_out, queue,
        machine, parents. All are checked before anything is written.
        """
        specs = list(specs)
        if not specs:
            return []
        app_rows = self._apps_by_name({s.get("app", "") for s in specs})
        now = time.time()
        rows, parent_lists = [], []
        for s in specs:
            row, parents = _job_row(s, app_rows, now)
            rows.append(row)
            parent_lists.append(parents)
        all_parents = sorted({p for ps in parent_lists for p in ps})
        with self.write() as conn:
            pstate = states_of(conn, all_parents, lock=True)
            missing = [p for p in all_parents if p not in pstate]
            if missing:
                raise UserError(f"parent job {missing[0]} does not exist; see `sluice ls`")
            ready = {a: ready_path(False, bool(r.get("preprocess"))) for a, r in app_rows.items()}
            waiting: tuple[str, ...] = (S.AWAITING_PARENTS,)
            paths = []
            for row, parents in zip(rows, parent_lists, strict=True):
                if parents and any(pstate[p] != S.JOB_FINISHED for p in parents):
                    path = waiting
                elif row["stage_in"]:
                    path = (S.READY,)
                else:
                    path = ready[row["_app"]]
                row["state"] = path[-1]
                paths.append(path)
            ids = db.allocate_ids(conn, "jobs", len(rows))
            db.bulk_insert(conn, "jobs", JOB_INSERT_COLUMNS,
                           [_job_tuple(jid, row) for jid, row in zip(ids, rows, strict=True)])
            _insert_events(conn, ids, paths, now, self.actor)
            db.bulk_insert(conn, "job_parents", ["parent_id", "child_id"],
                           [(p, jid) for jid, ps in zip(ids, parent_lists, strict=True) for p in ps])
            dead = [p for p in all_parents if pstate[p] in (S.FAILED, S.USER_KILLED)]
            if dead:
                fail_children(conn, dead, self.actor)
        return ids

    def _apps_by_name(self, names: Iterable[str]) -> dict[str, dict[str, Any]]:
        names = set(names)
        with self.read() as conn:
            found = {r.name: dict(r._mapping) for r in conn.execute(select(apps).where(apps.c.name.in_(names)))}
        for n in sorted(names):
            if n not in found:
                raise UserError(
                    f"unknown app {n!r}; see `sluice app ls`, or register it with `sluice app add`"
                    if n else "a job needs an app (--app NAME)"
                )
        return found

    def add_dependency(self, parent: int | Job, child: int | Job) -> None:
        """child waits for parent. Self-dependencies and cycles are refused."""
        self.add_dependencies([(parent, child)])

    def add_dependencies(self, edges: Iterable[tuple[int | Job, int | Job]]) -> None:
        """Add many edges at once; the DAG is checked for cycles before anything is written."""
        pairs = [(_id(p), _id(c)) for p, c in edges]
        for p, c in pairs:
            if p == c:
                raise UserError(f"job {p} cannot depend on itself")
        if not pairs:
            return
        with self.write() as conn:
            nodes = sorted({x for e in pairs for x in e})
            st = states_of(conn, nodes, lock=True)
            for x in nodes:
                if x not in st:
                    raise UserError(f"job {x} does not exist; see `sluice ls`")
            _check_acyclic(conn, pairs)
            existing = _existing_edges(conn, pairs)
            new = [e for e in dict.fromkeys(pairs) if e not in existing]
            db.bulk_insert(conn, "job_parents", ["parent_id", "child_id"], new)  # raw executemany/COPY
            waiting = sorted({c for p, c in new if st[p] != S.JOB_FINISHED})
            _hold_children(conn, waiting, st, self.actor)
            dead = sorted({p for p, c in new if st[p] in (S.FAILED, S.USER_KILLED)})
            if dead:
                fail_children(conn, dead, self.actor)

    def spawn_child(self, name: str, app: str, *, parent: int | Job | None = None, **spec: Any) -> Job:
        """Add a job that depends on `parent` (default: the job this code runs in)."""
        if parent is None:
            parent = _current_job_id()
        spec.setdefault("workflow", self.job(_id(parent)).workflow)
        return self.add_job(name, app, parents=[parent], **spec)

    def kill(self, ref: int | str | Job, *, recursive: bool = False, message: str = "killed by user") -> list[int]:
        """Mark a job USER_KILLED (a launcher running it stops the process); with recursive, its descendants
        too. Without it, children that still wait on it fail, saying why. Returns the ids killed."""
        root = ref.id if isinstance(ref, Job) else self.resolve(ref)
        with self.write() as conn:
            targets = [root] + (_descendants(conn, [root]) if recursive else [])
            st = states_of(conn, targets, lock=True)
            changes = [Change(j, st[j], S.USER_KILLED, message) for j in targets if st[j] not in END]
            if not changes and not recursive:
                raise UserError(f"job {root} already ended ({st[root]}); nothing to kill")
            apply(conn, changes, self.actor, strict=False)
        return [c.job_id for c in changes]

    def set_state(self, ref: int | str, state: str, message: str | None = None) -> Job:
        """Move a job to `state` through one legal transition (what `sluice modify --set state=` does)."""
        jid = self.resolve(ref)
        with self.write() as conn:
            self._set_state(conn, jid, state, message)
        return self.job(jid)

    def _set_state(self, conn: Connection, jid: int, state: str, message: str | None) -> None:
        target = parse_state(state)
        cur = states_of(conn, [jid], lock=True)[jid]
        check_path(cur, (target,))
        apply(conn, [Change(jid, cur, target, message or f"set to {target} by user")], self.actor)
        if target == S.JOB_FINISHED:
            release_children(conn, [jid], self.actor)

    MODIFIABLE = ("name", "workflow", "params", "args", "workdir", "num_nodes", "ranks_per_node",
                  "threads_per_rank", "gpus_per_rank", "wall_time_min", "environment", "tags", "data",
                  "max_retries", "stage_in", "stage_out", "queue", "machine", "state")

    def modify(self, ref: int | str | Job, **changes: Any) -> Job:
        """Change fields of a job; values are validated as in add_job, `state` only by a legal transition."""
        jid = ref.id if isinstance(ref, Job) else self.resolve(ref)
        bad = sorted(set(changes) - set(self.MODIFIABLE))
        if bad:
            raise UserError(f"cannot modify {', '.join(bad)}; modifiable fields: {', '.join(self.MODIFIABLE)}")
        state = changes.pop("state", None)
        values: dict[str, Any] = {}
        if changes:
            job = self.job(jid)
            if job.state == S.RUNNING:
                raise UserError(f"job {jid} is RUNNING; kill it first (`sluice killjob {jid}`) to change it")
            app_row = self._apps_by_name([job.app])
            merged = {**{k: getattr(job, k) for k in self.MODIFIABLE if k != "state"}, **changes, "app": job.app}
            row, _ = _job_row(merged, app_row, time.time())
            values = {k: row[k] for k in changes}
        with self.write() as conn:  # fields and state together: a refused state change writes nothing
            if values:
                conn.execute(update(jobs).where(jobs.c.id == jid).values(**values, updated_at=time.time()))
            if state is not None:
                self._set_state(conn, jid, str(state), None)
        return self.job(jid)

    def remove(self, ids: Sequence[int], *, force: bool = False) -> int:
        """Delete jobs (their events stay as provenance). RUNNING jobs are refused unless force."""
        ids = sorted(set(ids))
        with self.write() as conn:
            st = states_of(conn, ids, lock=True)
            running = [j for j in ids if st.get(j) == S.RUNNING]
            if running and not force:
                raise UserError(
                    f"{len(running)} job(s) are RUNNING (e.g. {running[0]}); kill them first with "
                    f"`sluice killjob`, or pass --force"
                )
            kids = [k for k in children_of(conn, ids) if k not in st]
            for i in range(0, len(ids), CHUNK):
                chunk = ids[i : i + CHUNK]
                conn.execute(delete(job_parents).where(or_(job_parents.c.parent_id.in_(chunk),
                                                           job_parents.c.child_id.in_(chunk))))
                conn.execute(delete(jobs).where(jobs.c.id.in_(chunk)))
            if kids:  # children no longer wait on what was removed
                _release(conn, kids, self.actor)
        return len(st)

    # ------------------------------------------------------------------ queries
    def job(self, ref: int | str) -> Job:
        jid = self.resolve(ref)
        with self.read() as conn:
            row = conn.execute(_job_select().where(jobs.c.id == jid)).first()
        if row is None:
            raise UserError(f"no job {ref}; see `sluice ls`")
        return _job(row, self)

    def jobs(self, *, state: str | Iterable[str] | None = None, workflow: str | Iterable[str] | None = None,
             app: str | None = None, tags: Mapping[str, str] | None = None, name: str | None = None,
             ids: Iterable[int] | None = None, session: int | None = None, limit: int | None = None,
             offset: int = 0, order: str = "id") -> list[Job]:
        """Jobs matching every filter given, ordered by id (or `-id`, `name`, `state`, `updated_at`)."""
        where = self.filter(state=state, workflow=workflow, app=app, tags=tags, name=name, ids=ids,
                            session=session)
        col = order.lstrip("-")
        if col not in jobs.c:
            raise UserError(f"cannot order by {col!r}; use a job field such as id, name, state, updated_at")
        ordering = jobs.c[col].desc() if order.startswith("-") else jobs.c[col]
        q = _job_select().where(where).order_by(ordering, jobs.c.id).offset(offset)
        if limit is not None:
            q = q.limit(limit)
        with self.read() as conn:
            return [_job(r, self) for r in conn.execute(q)]

    def filter(self, *, state: str | Iterable[str] | None = None,
               workflow: str | Iterable[str] | None = None, app: str | None = None,
               tags: Mapping[str, str] | None = None, name: str | None = None,
               ids: Iterable[int] | None = None, session: int | None = None) -> ColumnElement[bool]:
        """The WHERE clause shared by ls, rm and every query, so they always select the same jobs."""
        conds: list[ColumnElement[bool]] = []
        if state is not None:
            states = [state] if isinstance(state, str) else list(state)
            conds.append(jobs.c.state.in_([parse_state(s).value for s in states]))
        if workflow is not None:
            wfs = [workflow] if isinstance(workflow, str) else list(workflow)
            conds.append(jobs.c.workflow.in_(wfs))
        if app is not None:
            conds.append(jobs.c.app_id == self.app(app).id)
        if name is not None:
            conds.append(jobs.c.name.like(name.replace("*", "%")) if "*" in name else jobs.c.name == name)
        if ids is not None:
            conds.append(jobs.c.id.in_(list(ids)))
        if session is not None:
            conds.append(jobs.c.session_id == session)
        for k, v in (tags or {}).items():
            conds.append(jobs.c.tags[k].as_string() == str(v))
        return and_(*conds) if conds else and_(True)

    def ids(self, **filters: Any) -> list[int]:
        """Ids of the jobs matching the filters of `jobs()`, without loading the rows."""
        with self.read() as conn:
            return list(conn.execute(select(jobs.c.id).where(self.filter(**filters)).order_by(jobs.c.id)).scalars())

    def workflows(self) -> dict[str, int]:
        """Workflow names with their job counts."""
        q = select(jobs.c.workflow, func.count()).group_by(jobs.c.workflow).order_by(jobs.c.workflow)
        with self.read() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(q)}

    def count(self, **filters: Any) -> int:
        with self.read() as conn:
            return int(conn.execute(select(func.count()).select_from(jobs).where(self.filter(**filters))).scalar()
                       or 0)

    def summary(self, **filters: Any) -> dict[str, int]:
        """Jobs per state, in the order of the state machine; states with no jobs are left out."""
        q = select(jobs.c.state, func.count()).where(self.filter(**filters)).group_by(jobs.c.state)
        with self.read() as conn:
            counts = dict(conn.execute(q).all())
        return {s.value: counts[s.value] for s in State if counts.get(s.value)}

    def resolve(self, ref: int | str | Job, workflow: str | None = None) -> int:
        """A job id from an id, a unique prefix of an id's decimal form, or a name (within `workflow`)."""
        if isinstance(ref, Job):
            return ref.id
        if isinstance(ref, int):
            return ref
        s = str(ref).strip()
        with self.read() as conn:
            if s.isdigit():
                if conn.execute(select(jobs.c.id).where(jobs.c.id == int(s))).first():
                    return int(s)
                found = _id_prefix(conn, s)
                kind = "id prefix"
            else:
                wf, _, nm = s.rpartition("/") if "/" in s and workflow is None else (workflow, "", s)
                q = select(jobs.c.id, jobs.c.workflow).where(jobs.c.name == nm)
                if wf:
                    q = q.where(jobs.c.workflow == wf)
                found = [r.id for r in conn.execute(q.limit(11))]
                kind = "name"
        if not found:
            raise UserError(f"no job with {kind} {s!r}; see `sluice ls`")
        if len(found) > 1:
            shown = ", ".join(map(str, found[:10]))
            raise UserError(f"{kind} {s!r} is ambiguous: jobs {shown}; give the full id or WORKFLOW/NAME")
        return found[0]

    def parents(self, job_id: int) -> list[Job]:
        sub = select(job_parents.c.parent_id).where(job_parents.c.child_id == job_id)
        return self._jobs_where(jobs.c.id.in_(sub))

    def children(self, job_id: int) -> list[Job]:
        sub = select(job_parents.c.child_id).where(job_parents.c.parent_id == job_id)
        return self._jobs_where(jobs.c.id.in_(sub))

    def edges(self, ids: Sequence[int]) -> list[tuple[int, int]]:
        """(parent, child) edges touching the given jobs."""
        out: set[tuple[int, int]] = set()
        with self.read() as conn:
            for i in range(0, len(ids), CHUNK):
                chunk = list(ids[i : i + CHUNK])
                q = select(job_parents).where(or_(job_parents.c.parent_id.in_(chunk),
                                                  job_parents.c.child_id.in_(chunk)))
                out.update((r.parent_id, r.child_id) for r in conn.execute(q))
        return sorted(out)

    def _jobs_where(self, cond: ColumnElement[bool]) -> list[Job]:
        with self.read() as conn:
            return [_job(r, self) for r in conn.execute(_job_select().where(cond).order_by(jobs.c.id))]

    def history(self, ref: int | str) -> list[Event]:
        jid = self.resolve(ref)
        with self.read() as conn:
            rows = conn.execute(select(events).where(events.c.job_id == jid).order_by(events.c.id))
            return [Event(**dict(r._mapping)) for r in rows]

    def events(self, *, since: float | None = None, to_state: str | None = None) -> list[Event]:
        q = select(events).order_by(events.c.id)
        if since is not None:
            q = q.where(events.c.timestamp >= since)
        if to_state is not None:
            q = q.where(events.c.to_state == parse_state(to_state).value)
        with self.read() as conn:
            return [Event(**dict(r._mapping)) for r in conn.execute(q)]

    def batch_jobs(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        q = select(batch_jobs).order_by(batch_jobs.c.id)
        if active_only:
            q = q.where(batch_jobs.c.state.in_(["submitting", "queued", "running"]))
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def sessions(self, *, live_only: bool = False) -> list[dict[str, Any]]:
        q = select(launcher_sessions).order_by(launcher_sessions.c.id)
        if live_only:
            q = q.where(launcher_sessions.c.ended_at.is_(None))
        with self.read() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]


# ---------------------------------------------------------------------- helpers
def _job_select() -> Any:
    return select(*JOB_COLUMNS, apps.c.name.label("app")).join(apps, apps.c.id == jobs.c.app_id)


def _id(x: int | Job) -> int:
    return x.id if isinstance(x, Job) else int(x)


def _check_name(name: str, what: str) -> None:
    if not name or not name.strip() or "/" in name or len(name) > 255:
        raise UserError(f"bad {what} {name!r}: give a non-empty name without '/', up to 255 characters")


def _positive_int(spec: Mapping[str, Any], key: str, default: int, minimum: int = 1) -> int:
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


JOB_FIELDS = frozenset({"name", "app", "workflow", "params", "args", "workdir", "num_nodes", "ranks_per_node",
                        "threads_per_rank", "gpus_per_rank", "wall_time_min", "environment", "tags", "data",
                        "max_retries", "stage_in", "stage_out", "queue", "machine", "parents"})


def _job_row(s: Mapping[str, Any], app_rows: Mapping[str, dict[str, Any]], now: float
             ) -> tuple[dict[str, Any], list[int]]:
    """Validate one job spec into a jobs row (plus its parent ids); raises UserError on any bad field.

    add_jobs calls this once per job (100,000 jobs in one call is normal), so the common case, a spec with a
    few fields, takes fast paths: one C-level subset test for unknown fields, per-app cached placeholder set,
    and no per-field work for fields the spec does not give. Errors are exactly those of the slow checks.
    """
    keys = s.keys()
    if not keys <= JOB_FIELDS:
        unknown = keys - JOB_FIELDS
        raise UserError(f"unknown job field(s) {', '.join(sorted(unknown))}; fields: {', '.join(sorted(JOB_FIELDS))}")
    get = s.get
    name = get("name") or ""
    if type(name) is not str or "/" in name or not name.strip() or len(name) > 255:
        _check_name(str(name), "job name")
    workflow = get("workflow") or "default"
    if workflow != "default" and (type(workflow) is not str or "/" in workflow or not workflow.strip()
                                  or len(workflow) > 255):
        _check_name(str(workflow), "workflow")
    app_row = app_rows[s["app"]]
    want = app_row.get("_fields")
    if want is None:
        want = app_row["_fields"] = frozenset(templates.fields(app_row["command"]))
    params = get("params") or {}
    if params.keys() != want:
        templates.check_params(app_row["name"], app_row["command"], params)
    if keys <= _PLAIN_FIELDS:  # name, app, workflow, params, parents only: everything else is a default
        row = {"_app": app_row["name"], "name": name, "workflow": workflow, "app_id": app_row["id"],
               "params": (params if type(params) is dict else dict(params)) or None, **_PLAIN_DEFAULTS,
               "created_at": now, "updated_at": now}
    else:
        args = get("args") or None
        if isinstance(args, str):
            raise UserError("args must be a list of strings (the CLI splits --args for you)")
        for key in ("stage_in", "stage_out"):
            if get(key) is not None and not isinstance(get(key), list | tuple):
                raise UserError(f"{key} must be a list of URLs or {{src, dest}} entries")
        wall = get("wall_time_min")
        row = {
            "_app": app_row["name"], "name": name, "workflow": workflow, "app_id": app_row["id"],
            "params": dict(params) or None, "args": [str(a) for a in args] if args else None,
            "workdir": str(s["workdir"]) if get("workdir") else None,
            "num_nodes": _positive_int(s, "num_nodes", 1),
            "ranks_per_node": _positive_int(s, "ranks_per_node", 1),
            "threads_per_rank": _positive_int(s, "threads_per_rank", 1),
            "gpus_per_rank": _positive_int(s, "gpus_per_rank", 0, minimum=0),
            "wall_time_min": wall_minutes(wall) if wall is not None else None,
            "environment": _mapping(s, "environment") if get("environment") else None,
            "tags": _mapping(s, "tags") if get("tags") else None, "data": get("data"),
            "stage_in": list(s["stage_in"]) if get("stage_in") else None,
            "stage_out": list(s["stage_out"]) if get("stage_out") else None,
            "max_retries": _positive_int(s, "max_retries", 3, minimum=0), "retry_count": 0,
            "queue": get("queue"), "machine": get("machine"), "session_id": None, "state_message": None,
            "created_at": now, "updated_at": now,
        }
    ps = get("parents")
    parents = sorted({_id(p) for p in ps}) if ps else []
    return row, parents


_PLAIN_FIELDS = frozenset({"name", "app", "workflow", "params", "parents"})
_PLAIN_DEFAULTS: dict[str, Any] = {
    "args": None, "workdir": None, "num_nodes": 1, "ranks_per_node": 1, "threads_per_rank": 1, "gpus_per_rank": 0,
    "wall_time_min": None, "environment": None, "tags": None, "data": None, "stage_in": None, "stage_out": None,
    "max_retries": 3, "retry_count": 0, "queue": None, "machine": None, "session_id": None, "state_message": None}


JOB_INSERT_COLUMNS = [c.name for c in jobs.c]
EVENT_INSERT_COLUMNS = ["job_id", "from_state", "to_state", "timestamp", "actor", "message"]
_JSON_COLUMNS = {c.name for c in jobs.c if isinstance(c.type, JSON)}


_JSON_INDEXES = [i for i, c in enumerate(JOB_INSERT_COLUMNS) if c in _JSON_COLUMNS]
_ID_INDEX = JOB_INSERT_COLUMNS.index("id")
_row_values = operator.itemgetter(*(c for c in JOB_INSERT_COLUMNS if c != "id"))
try:  # json.dumps builds a fresh C encoder per call; one prebuilt (no circularity check) halves the cost
    from json.encoder import c_encode_basestring_ascii, c_make_encoder  # type: ignore[attr-defined]

    _c_encoder = c_make_encoder(None, json.JSONEncoder().default, c_encode_basestring_ascii, None, ": ", ", ",
                                False, False, True) if c_make_encoder and c_encode_basestring_ascii else None
except ImportError:  # pragma: no cover - CPython always has the C accelerator
    _c_encoder = None


def _dumps(v: Any) -> str:
    """json.dumps(v), faster; anything unusual (or an error) goes through json.dumps for its exact message."""
    if _c_encoder is not None:
        try:
            return "".join(_c_encoder(v, 0))
        except (RecursionError, ValueError, TypeError):
            pass
    return json.dumps(v)


def _job_tuple(jid: int, row: dict[str, Any]) -> tuple[Any, ...]:
    """A jobs row as the driver wants it: explicit id, JSON columns serialised once here."""
    vals = list(_row_values(row))
    vals.insert(_ID_INDEX, jid)
    for i in _JSON_INDEXES:
        v = vals[i]
        if v is not None:
            vals[i] = _dumps(v)
    return tuple(vals)


def _insert_events(conn: Connection, ids: Sequence[int], paths: Sequence[tuple[str, ...]], now: float,
                   actor: str) -> None:
    """The creation events of new jobs: one per step of each job's path from CREATED (the first says "created").

    The path is a function of the job's final state (ready_path never skips a step), so when the new ids are
    one contiguous range -- always on SQLite and MariaDB (allocate_ids holds the write lock), almost always on
    PostgreSQL -- the database writes them itself: one INSERT ... SELECT from the new jobs rows per step, no
    row crossing the driver. Each job's events still get increasing ids, so its history reads in order.
    Otherwise (scattered ids) the rows go through executemany.
    """
    if not ids:
        return
    lo, hi = ids[0], ids[-1]
    if hi - lo + 1 != len(ids):
        evs: list[tuple[Any, ...]] = []
        for jid, path in zip(ids, paths, strict=True):
            prev = S.CREATED.value
            for i, st in enumerate(path):
                evs.append((jid, prev, st, now, actor, "created" if i == 0 else None))
                prev = st
        db.bulk_insert(conn, "events", EVENT_INSERT_COLUMNS, evs)
        return
    by_final = {p[-1]: p for p in set(paths)}
    steps: dict[tuple[str, str, int], list[str]] = {}  # (from, to, step) -> final states whose path has it
    for final, path in by_final.items():
        prev = S.CREATED.value
        for i, st in enumerate(path):
            steps.setdefault((prev, st, i), []).append(final)
            prev = st
    sel = select(jobs.c.id).where(jobs.c.id >= lo, jobs.c.id <= hi)
    for (frm, to, i), finals in sorted(steps.items(), key=lambda kv: kv[0][2]):
        q = sel if len(finals) == len(by_final) else sel.where(jobs.c.state.in_(sorted(finals)))
        cols = q.with_only_columns(jobs.c.id, literal(frm, String()), literal(to, String()), literal(now, Double()),
                                   literal(actor, String()), literal("created" if i == 0 else None, String()))
        conn.execute(insert(events).from_select(EVENT_INSERT_COLUMNS, cols))


def _descendants(conn: Connection, roots: Sequence[int]) -> list[int]:
    seen: set[int] = set()
    frontier = list(roots)
    while frontier:
        kids = [k for k in children_of(conn, frontier) if k not in seen]
        seen.update(kids)
        frontier = kids
    return sorted(seen - set(roots))


def _check_acyclic(conn: Connection, new: Sequence[tuple[int, int]]) -> None:
    """Refuse edges that would close a cycle.

    The graph in the DB is acyclic, so any cycle passes through a new edge p->c and lies wholly among the
    descendants of the new children. Walk those (in batches of ids, one query per level) and topologically
    sort them with Kahn's algorithm; whatever cannot be sorted is on a cycle. Balsam turned its check off as
    too slow; this one visits only what the new edges can reach.
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
    indeg = dict.fromkeys(seen, 0)
    for p in seen:
        for c in out.get(p, ()):
            indeg[c] += 1
    stack = [n for n, d in indeg.items() if d == 0]
    while stack:
        n = stack.pop()
        for c in out.get(n, ()):
            indeg[c] -= 1
            if indeg[c] == 0:
                stack.append(c)
    cyc = sorted(n for n, d in indeg.items() if d > 0)
    if cyc:
        bad = next((p, c) for p, c in new if p in indeg and indeg[p] > 0 and indeg.get(c, 0) > 0)
        raise UserError(
            f"dependency {bad[0]} -> {bad[1]} would make a cycle (through jobs {', '.join(map(str, cyc[:8]))}); "
            "a job cannot (indirectly) wait for itself"
        )


def _existing_edges(conn: Connection, pairs: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    children = sorted({c for _, c in pairs})
    rows = db.raw_in(conn, "SELECT parent_id, child_id FROM job_parents WHERE child_id IN", children)
    return {(int(p), int(c)) for p, c in rows}


_WAITING = frozenset({S.CREATED.value, S.AWAITING_PARENTS.value})
_HOLDABLE = frozenset({S.READY.value, S.STAGED_IN.value, S.PREPROCESSED.value, S.RESTART_READY.value})


def _hold_children(conn: Connection, kids: Sequence[int], st: Mapping[int, str], actor: str) -> None:
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


def _release(conn: Connection, kids: Sequence[int], actor: str) -> None:
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


def _id_prefix(conn: Connection, digits: str) -> list[int]:
    """Ids whose decimal form starts with digits: one range query on the primary key per extra length."""
    top = conn.execute(select(func.max(jobs.c.id))).scalar() or 0
    base, found = int(digits), list[int]()
    for extra in range(1, len(str(top)) - len(digits) + 1):
        lo, hi = base * 10**extra, (base + 1) * 10**extra
        found += conn.execute(select(jobs.c.id).where(jobs.c.id >= lo, jobs.c.id < hi).limit(11)).scalars().all()
        if len(found) > 10:
            break
    return found


def _current_job_id() -> int:
    v = os.environ.get(ENV_JOB_ID)
    if not v:
        raise UserError(f"not inside a sluice job (${ENV_JOB_ID} is not set); pass parent= explicitly")
    return int(v)


def current_job() -> Job:
    """The job this process runs as, from $SLUICE_JOB_ID and $SLUICE_WORKSPACE (set by the launcher)."""
    jid = _current_job_id()
    return Workspace.open().job(jid)


def spawn_child(name: str, app: str, **spec: Any) -> Job:
    """From inside a running job: add a child of it to the same workspace."""
    return Workspace.open().spawn_child(name, app, **spec)
