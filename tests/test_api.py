"""The Python API on every backend: what a campaign script relies on."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from sluice.api import Workspace
from sluice.errors import DatabaseError, IllegalTransition, UserError, WorkspaceNotFound
from sluice.states import S
from sluice.store import db


@pytest.fixture
def sim(ws: Workspace) -> Workspace:
    ws.add_app("sim", "simulate --temp {temp} --out {out}", "a simulation")
    ws.add_app("post", "analyse {inp}", postprocess="touch done")
    return ws


def add(ws: Workspace, name: str, **kw: object) -> int:
    kw.setdefault("params", {"temp": 300, "out": f"{name}.dat"})
    return ws.add_job(name, app="sim", **kw).id  # type: ignore[arg-type]


def test_job_without_parents_is_fast_forwarded_to_runnable_with_each_step_recorded(sim: Workspace) -> None:
    j = sim.add_job("t300", app="sim", params={"temp": 300, "out": "x"}, workflow="scan", tags={"T": "300"})
    assert j.state == S.PREPROCESSED
    assert [(e.from_state, e.to_state) for e in j.history] == [
        ("CREATED", "READY"), ("READY", "STAGED_IN"), ("STAGED_IN", "PREPROCESSED")]
    assert j.path == sim.path / "data" / "scan" / f"t300_{j.id}"


def test_preprocess_and_stage_in_stop_the_fast_forward(sim: Workspace) -> None:
    sim.add_app("pre", "run {x}", preprocess="prep.sh")
    assert sim.add_job("a", app="pre", params={"x": 1}).state == S.STAGED_IN
    assert sim.add_job("b", app="pre", params={"x": 1}, stage_in=["/tmp/in.dat"]).state == S.READY


def test_child_waits_then_is_released_when_all_parents_finish(sim: Workspace) -> None:
    p1, p2 = add(sim, "p1"), add(sim, "p2")
    c = sim.add_job("c", app="post", params={"inp": "x"}, parents=[p1, p2])
    assert c.state == S.AWAITING_PARENTS
    assert {p.id for p in c.parents} == {p1, p2}
    assert [k.id for k in sim.job(p1).children] == [c.id]
    for p in (p1,):
        finish(sim, p)
    assert sim.job(c.id).state == S.AWAITING_PARENTS
    finish(sim, p2)
    assert sim.job(c.id).state == S.PREPROCESSED


def finish(ws: Workspace, jid: int) -> None:
    for st in (S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED):
        ws.set_state(jid, st, by_launcher=True)


def test_children_of_a_failed_parent_fail_and_say_why(sim: Workspace) -> None:
    p = add(sim, "p")
    c = add(sim, "c", parents=[p])
    g = add(sim, "g", parents=[c])
    sim.set_state(p, S.RUNNING, by_launcher=True)
    sim.set_state(p, S.RUN_ERROR, by_launcher=True)
    sim.set_state(p, S.FAILED)
    assert sim.job(c).state == S.FAILED and f"parent {p} ended FAILED" in (sim.job(c).state_message or "")
    assert sim.job(g).state == S.FAILED and f"parent {c}" in (sim.job(g).state_message or "")


def test_cycles_and_self_dependencies_are_refused_without_change(sim: Workspace) -> None:
    a, b, c = add(sim, "a"), add(sim, "b"), add(sim, "c")
    sim.add_dependency(a, b)
    sim.add_dependency(b, c)
    before = sim.edges([a, b, c])
    with pytest.raises(UserError, match="cycle"):
        sim.add_dependency(c, a)
    with pytest.raises(UserError, match="itself"):
        sim.add_dependency(b, b)
    with pytest.raises(UserError, match="cycle"):
        sim.add_dependencies([(a, c), (c, b)])
    assert sim.edges([a, b, c]) == before
    assert sim.job(b).state == S.AWAITING_PARENTS


def test_bulk_add_returns_ids_in_order_and_validates_everything_first(sim: Workspace) -> None:
    ids = sim.add_jobs([{"name": f"j{i}", "app": "sim", "params": {"temp": i, "out": "o"}} for i in range(50)])
    assert ids == sorted(ids) and len(set(ids)) == 50
    assert [j.name for j in sim.jobs(ids=ids[:3])] == ["j0", "j1", "j2"]
    n = sim.count()
    bad = [{"name": "ok", "app": "sim", "params": {"temp": 1, "out": "o"}},
           {"name": "bad", "app": "sim", "params": {"temp": 1}}]
    with pytest.raises(UserError, match="needs parameter"):
        sim.add_jobs(bad)
    assert sim.count() == n


@pytest.mark.parametrize("field,value,msg", [
    ("num_nodes", 0, "at least 1"), ("ranks_per_node", -2, "at least 1"), ("wall_time_min", 0, "positive"),
    ("wall_time_min", "ten", "bad wall time"), ("threads_per_rank", 1.5, "whole number"),
])
def test_bad_resources_are_user_errors(sim: Workspace, field: str, value: object, msg: str) -> None:
    with pytest.raises(UserError, match=msg):
        add(sim, "x", **{field: value})
    assert sim.count() == 0


def test_template_parameters_missing_or_unknown(sim: Workspace) -> None:
    with pytest.raises(UserError, match="needs parameter.*out"):
        sim.add_job("x", app="sim", params={"temp": 1})
    with pytest.raises(UserError, match="no parameter.*pressure"):
        sim.add_job("x", app="sim", params={"temp": 1, "out": "o", "pressure": 2})
    with pytest.raises(UserError, match="unknown app 'nope'"):
        sim.add_job("x", app="nope")


def test_wall_time_formats(sim: Workspace) -> None:
    assert sim.job(add(sim, "a", wall_time_min="01:30:00")).wall_time_min == 90
    assert sim.job(add(sim, "b", wall_time_min="1-00:00")).wall_time_min == 1440
    assert sim.job(add(sim, "c", wall_time_min=2.5)).wall_time_min == 2.5


def test_resolve_by_id_prefix_and_name(sim: Workspace) -> None:
    ids = [add(sim, f"n{i}", workflow="w1" if i % 2 else "w2") for i in range(12)]
    assert sim.resolve(str(ids[0])) == ids[0]
    assert sim.resolve("n3") == ids[3]
    sim.add_job("n3", app="sim", params={"temp": 1, "out": "o"}, workflow="w2")
    with pytest.raises(UserError, match="ambiguous"):
        sim.resolve("n3")
    assert sim.resolve("w1/n3") == ids[3]
    with pytest.raises(UserError, match="no job"):
        sim.resolve("999999")


def test_id_prefix_unique_and_ambiguous(sim: Workspace) -> None:
    ids = sim.add_jobs([{"name": f"j{i}", "app": "sim", "params": {"temp": i, "out": "o"}} for i in range(40)])
    k = ids[-1] // 10  # ids k0..k9 that exist share the prefix str(k)
    if k in ids:
        sim.remove([k])  # an exact id wins over a prefix; take it away
    sharing = [i for i in ids if str(i).startswith(str(k)) and i != k]
    assert len(sharing) >= 2 or ids[-1] % 10 == 0
    if len(sharing) >= 2:
        with pytest.raises(UserError, match="ambiguous"):
            sim.resolve(str(k))
    assert sim.resolve(str(ids[-1])) == ids[-1]


def test_queries_filter_by_state_workflow_tags_and_name(sim: Workspace) -> None:
    add(sim, "a", workflow="w", tags={"temp": "300"})
    add(sim, "b", workflow="w", tags={"temp": "310"})
    add(sim, "c", workflow="v")
    assert [j.name for j in sim.jobs(workflow="w", tags={"temp": "310"})] == ["b"]
    assert [j.name for j in sim.jobs(state="preprocessed", workflow=["v"])] == ["c"]
    assert [j.name for j in sim.jobs(name="*")] == ["a", "b", "c"]
    assert sim.summary() == {"PREPROCESSED": 3}
    with pytest.raises(UserError, match="unknown state"):
        sim.jobs(state="DONE")


def test_set_state_only_through_legal_transitions(sim: Workspace) -> None:
    j = add(sim, "a")
    with pytest.raises(IllegalTransition):
        sim.modify(j, state="JOB_FINISHED")
    assert sim.job(j).state == S.PREPROCESSED
    sim.modify(j, state="RUNNING", num_nodes=2) if False else None
    sim.modify(j, num_nodes=2, tags={"a": "b"})
    assert sim.job(j).num_nodes == 2 and sim.job(j).tags == {"a": "b"}


def test_retries_count_and_are_bounded_by_the_caller(sim: Workspace) -> None:
    j = add(sim, "a", max_retries=1)
    sim.set_state(j, S.RUNNING, by_launcher=True)
    sim.set_state(j, S.RUN_TIMEOUT, by_launcher=True)
    sim.set_state(j, S.RESTART_READY)
    assert sim.job(j).retry_count == 1


def test_kill_recursive_and_children_of_killed_fail(sim: Workspace) -> None:
    a = add(sim, "a")
    b = add(sim, "b", parents=[a])
    c = add(sim, "c", parents=[b])
    sim.kill(a)
    assert sim.job(a).state == S.USER_KILLED
    assert sim.job(b).state == S.FAILED and sim.job(c).state == S.FAILED
    x = add(sim, "x")
    y = add(sim, "y", parents=[x])
    assert sorted(sim.kill(x, recursive=True)) == sorted([x, y])
    assert sim.job(y).state == S.USER_KILLED


def test_remove_refuses_running_jobs_and_releases_children(sim: Workspace) -> None:
    a, b = add(sim, "a"), add(sim, "b")
    c = add(sim, "c", parents=[a])
    sim.set_state(b, S.RUNNING, by_launcher=True)
    with pytest.raises(UserError, match="RUNNING"):
        sim.remove([a, b])
    assert sim.count() == 3
    assert sim.remove([a]) == 1
    assert sim.job(c).state == S.PREPROCESSED
    assert sim.history(a)  # events stay as provenance


def test_spawn_child_and_current_job_from_the_environment(sim: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    import sluice

    p = add(sim, "p", workflow="wf")
    monkeypatch.setenv("SLUICE_JOB_ID", str(p))
    assert sluice.current_job().id == p
    child = sluice.spawn_child("kid", "sim", params={"temp": 1, "out": "o"})
    assert child.workflow == "wf" and [x.id for x in child.parents] == [p]
    assert child.state == S.AWAITING_PARENTS


def test_parent_given_to_a_ready_job_makes_it_wait(sim: Workspace) -> None:
    a, b = add(sim, "a"), add(sim, "b")
    sim.add_dependency(a, b)
    assert sim.job(b).state == S.AWAITING_PARENTS
    sim.set_state(b, S.RUNNING, by_launcher=True) if False else None
    r = add(sim, "r")
    sim.set_state(r, S.RUNNING, by_launcher=True)
    with pytest.raises(UserError, match="too late"):
        sim.add_dependency(a, r)


def test_workspace_not_found(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_WORKSPACE", raising=False)
    monkeypatch.chdir(str(tmp_path))
    with pytest.raises(WorkspaceNotFound, match="sluice init"):
        Workspace.open()


def test_workspace_found_from_a_subdirectory(sqlite_ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLUICE_WORKSPACE")
    sub = sqlite_ws.path / "data" / "deep"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert Workspace.open().path == sqlite_ws.path


def test_out_of_date_schema_is_detected_and_upgrade_fixes_it(sqlite_ws: Workspace) -> None:
    with sqlite_ws.engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(UserError, match="sluice db upgrade"):
        Workspace.open(sqlite_ws.path)
    with sqlite_ws.engine.begin() as c:
        c.execute(text(f"UPDATE alembic_version SET version_num = '{db.HEAD}'"))
    assert Workspace.open(sqlite_ws.path).count() == 0


def test_unreachable_database_is_one_line_without_password(tmp_path: object) -> None:
    from pathlib import Path

    with pytest.raises(DatabaseError) as e:
        Workspace.create(Path(str(tmp_path)) / "w", db_url="postgresql+psycopg://postgres:secret@127.0.0.1:1/x")
    assert "secret" not in str(e.value) and "\n" not in str(e.value)
    assert not (Path(str(tmp_path)) / "w").exists()


def test_head_constant_matches_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == db.HEAD


def test_migrations_create_exactly_the_tables_of_models(sqlite_ws: Workspace) -> None:
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(db.MIGRATIONS))
    with sqlite_ws.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.check(cfg)  # raises if models.py and the migrations disagree


def test_a_user_cannot_put_a_job_in_a_state_only_a_launcher_sets(sim: Workspace) -> None:
    """RUNNING set by hand had no launcher behind it: the job stayed RUNNING forever."""
    j = add(sim, "a")
    for st in ("RUNNING", "RUN_DONE", "POSTPROCESSED"):
        with pytest.raises(UserError, match=f"only a launcher sets {st}"):
            sim.modify(j, state=st)
        with pytest.raises(UserError, match="only a launcher"):
            sim.set_state(j, st)
    assert sim.job(j).state == S.PREPROCESSED
    assert [e.to_state for e in sim.history(j)][-1] == S.PREPROCESSED


def test_events_of_one_batch_never_go_back_in_time(sim: Workspace) -> None:
    """A step folded into the next change of the same batch was stamped after the step that follows it."""
    from sluice.api.transitions import write_changes
    from sluice.states import Change

    sim.add_app("pre", "true", preprocess="true")
    j = sim.add_job("staged", app="pre").id
    assert sim.job(j).state == S.STAGED_IN  # waiting for its preprocess
    sim.set_state(j, "FAILED")
    sim.set_state(j, "READY")
    write_changes(sim, [Change(j, S.READY, S.STAGED_IN), Change(j, S.STAGED_IN, S.PREPROCESSED, "done")], "test")
    stamps = [(e.to_state, e.timestamp) for e in sim.history(j)]
    assert [s for s, _ in stamps][-2:] == [S.STAGED_IN, S.PREPROCESSED]
    times = [t for _, t in stamps]
    assert times == sorted(times), stamps


@pytest.mark.parametrize("name", ["my app", "a;rm", "$(x)", "-dash", "a/b", "", "é"])
def test_app_names_are_identifiers(sim: Workspace, name: str) -> None:
    with pytest.raises(UserError, match="bad app name"):
        sim.add_app(name, "true")
    assert name not in {a.name for a in sim.apps()}


def test_app_names_may_use_letters_digits_dots_dashes_underscores(sim: Workspace) -> None:
    assert sim.add_app("Gen_v2.1-mpi", "true").name == "Gen_v2.1-mpi"


@pytest.mark.parametrize("wall", ["1:75:00", "0:10:60", "1-00:61"])
def test_clock_wall_times_keep_minutes_and_seconds_under_60(sim: Workspace, wall: str) -> None:
    with pytest.raises(UserError, match="go up to 59"):
        add(sim, "w", wall_time_min=wall)
    assert sim.count() == 0


def test_unknown_batch_state_counts_as_active(sim: Workspace) -> None:
    """The service and the API once disagreed: the API left `unknown` batch jobs out of the active ones."""
    from sluice.api import batch

    bid = batch.add(sim, scheduler="slurm", num_nodes=1, wall_time_min=10, queue=None, project=None,
                    job_mode="serial")
    batch.change(sim, [(bid, {"state": "unknown", "native_id": "42"})])
    assert [b["id"] for b in sim.batch_jobs(active_only=True)] == [bid]
