"""Every user error: exit code 2, one line on stderr (`sluice: error: ...`), no traceback, the DB unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from sluice import config
from sluice.api import Workspace
from sluice.store import db

from .conftest import Run, add_sim, fault, ok, snapshot, user_error


@pytest.fixture
def two(ws: Workspace) -> tuple[Workspace, int, int]:
    """App `sim` ({temp}) and two jobs a -> b."""
    add_sim(ws)
    a = ws.add_job("a", app="sim", params={"temp": 1}, workflow="w")
    b = ws.add_job("b", app="sim", params={"temp": 2}, workflow="w", parents=[a])
    return ws, a.id, b.id


JOB = ["job", "--name", "x", "--app", "sim"]
CASES = {
    "unknown_app": (["job", "--name", "x", "--app", "nope"], "unknown app 'nope'"),
    "unknown_job_id": (["show", "987654321"], "no job"),
    "unknown_job_name": (["history", "w/nobody"], "no job with name"),
    "self_dependency": (["dep", "{a}", "{a}"], "itself"),
    "dependency_cycle": (["dep", "{b}", "{a}"], "cycle"),
    "zero_nodes": ([*JOB, "-p", "temp=1", "--num-nodes", "0"], "num-nodes must be at least 1"),
    "negative_ranks": ([*JOB, "-p", "temp=1", "--ranks-per-node", "-2"], "ranks-per-node"),
    "negative_gpus": ([*JOB, "-p", "temp=1", "--gpus-per-rank", "-1"], "gpus-per-rank"),
    "zero_wall_time": ([*JOB, "-p", "temp=1", "--wall-min", "0"], "wall time must be positive"),
    "negative_wall_time": ([*JOB, "-p", "temp=1", "--wall-min", "-5"], "wall time must be positive"),
    "bad_wall_time_format": ([*JOB, "-p", "temp=1", "--wall-time", "1:xx"], "HH:MM:SS"),
    "missing_template_parameter": (JOB, "needs parameter(s) temp"),
    "unknown_template_parameter": ([*JOB, "-p", "temp=1", "-p", "pressure=2"], "no parameter(s) pressure"),
    "bad_param_syntax": ([*JOB, "-p", "temp"], "KEY=VALUE"),
    "bad_data_json": ([*JOB, "-p", "temp=1", "--data", "{oops"], "not valid JSON"),
    "unknown_parent": ([*JOB, "-p", "temp=1", "--parent", "987654321"], "no job"),
    "non_integer_nodes": ([*JOB, "-p", "temp=1", "--num-nodes", "two"], "not a valid integer"),
    "missing_option": (["job", "--app", "sim"], "missing option '--name'"),
    "unknown_command": (["frobnicate"], "no such command"),
    "unknown_state_in_ls": (["ls", "--state", "BOGUS"], "unknown state 'BOGUS'"),
    "unknown_state_in_rm": (["rm", "--state", "DONE", "--yes"], "unknown state 'DONE'"),
    "illegal_state_change": (["modify", "{a}", "--set", "state=JOB_FINISHED"], "cannot go from"),
    "illegal_state_with_other_fields": (["modify", "{a}", "--set", "num_nodes=8", "--set", "state=JOB_FINISHED"],
                                        "cannot go from"),
    "launcher_state_with_other_fields": (["modify", "{a}", "--set", "num_nodes=8", "--set", "state=RUNNING"],
                                         "only a launcher sets RUNNING"),
    "unknown_field": (["modify", "{a}", "--set", "colour=red"], "cannot modify colour"),
    "bad_int_field": (["modify", "{a}", "--set", "num_nodes=lots"], "whole number"),
    "rm_without_filter": (["rm", "--yes"], "--all"),
    "rm_app_in_use": (["rm", "apps", "--name", "sim"], "used by 2 job(s)"),
    "app_exists": (["app", "add", "sim", "--command", "x"], "exists already"),
    "app_bad_template": (["app", "add", "bad", "--command", "run {0x}"], "bad placeholder"),
    "balsam_app_missing_exec": (["app", "--name", "y"], "--exec"),
    "kill_ended_job": (["killjob", "{a}", "--recursive"], None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_user_error(run: Run, two: tuple[Workspace, int, int], case: str) -> None:
    ws, a, b = two
    args, fragment = CASES[case]
    if case == "kill_ended_job":  # a job that already ended cannot be killed again
        ws.kill(b)
        args, fragment = ["killjob", str(b)], "already ended"
    args = [x.replace("{a}", str(a)).replace("{b}", str(b)) for x in args]
    before = snapshot(ws)
    user_error(run(*args), *([fragment] if fragment else []))
    assert snapshot(ws) == before


def test_ambiguous_id_prefix(run: Run, ws: Workspace) -> None:
    add_sim(ws)
    ids = [ws.add_job(f"j{i}", app="sim", params={"temp": i}).id for i in range(21)]
    decades: dict[str, list[int]] = {}
    for i in ids:
        decades.setdefault(str(i)[:-1], []).append(i)
    prefix = next(p for p, members in decades.items() if p and len(members) >= 2)
    if int(prefix) in ids:
        ws.remove([int(prefix)])
    before = snapshot(ws)
    user_error(run("show", prefix), "ambiguous")
    user_error(run("dep", prefix, str(ids[-1])), "ambiguous")
    assert snapshot(ws) == before


def test_workspace_not_found(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLUICE_WORKSPACE", raising=False)
    for args in (["ls"], ["job", "--name", "x", "--app", "y"], ["db", "upgrade"], ["app", "ls"]):
        user_error(run(*args, env={"SLUICE_WORKSPACE": None}), "no sluice workspace")
    user_error(run("--workspace", str(tmp_path), "ls"), "not a sluice workspace")


@pytest.mark.parametrize("url", ["postgresql+psycopg://postgres:secret@127.0.0.1:1/x",
                                 "mysql+pymysql://root:secret@127.0.0.1:3306/test"],
                         ids=["unreachable", "wrong_password"])
def test_database_unreachable_or_refused(run: Run, tmp_path: Path, url: str) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    config.write_new(root, url)
    for args in (["ls"], ["ls", "--summary"], ["job", "--name", "x", "--app", "y"], ["db", "upgrade"],
                 ["db", "status"], ["show", "1"]):
        r = run(*args, env={"SLUICE_WORKSPACE": str(root)})
        line = fault(r, "database")  # not the user's input: exit 3, not 2
        assert "secret" not in r.output and "secret" not in line


def test_schema_out_of_date(run: Run, ws: Workspace) -> None:
    with ws.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    try:
        db.dispose_all()
        for args in (["ls"], ["ls", "--summary"], ["app", "ls"], ["job", "--name", "x", "--app", "y"],
                     ["show", "1"], ["rm", "--all", "--yes"], ["submit", "nofile.yaml"]):
            user_error(run(*args), "sluice db upgrade")
        # no real older revision exists yet: upgrading from the fake one fails, in one line
        user_error(run("db", "upgrade"), "cannot upgrade")
    finally:
        with db.engine(ws.config.db_url).begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": db.HEAD})
    ok(run("ls"))
