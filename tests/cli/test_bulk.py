"""Steering a campaign in bulk: killjob, modify and retry take the filters of ls, ask first, and are atomic."""

from __future__ import annotations

from sluice.api import Workspace
from sluice.states import S

from .conftest import Run, ok, snapshot, user_error


def _campaign(ws: Workspace) -> list[int]:
    ws.add_app("t", "/bin/true")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "t", "workflow": "a" if i < 6 else "b", "tags": {"k": str(i % 2)}}
                       for i in range(10)])
    return ids


def test_killjob_by_filter_asks_then_kills_in_one_go(run: Run, ws: Workspace) -> None:
    ids = _campaign(ws)
    before = snapshot(ws)
    r = run("killjob", "--workflow", "a", "--tag", "k=1", input="n\n")
    assert r.exit_code == 1 and "Kill 3 job(s)?" in r.stderr and "nothing changed" in r.stderr
    assert snapshot(ws) == before
    r = ok(run("killjob", "--workflow", "a", "--tag", "k=1", input="y\n"))
    assert "killed 3 job(s)" in r.stdout
    assert {j.id for j in ws.jobs(state="USER_KILLED")} == {ids[1], ids[3], ids[5]}
    ok(run("killjob", str(ids[0])))  # one job by id: no question
    assert ws.job(ids[0]).state == S.USER_KILLED


def test_modify_by_filter_is_all_or_nothing(run: Run, ws: Workspace) -> None:
    ids = _campaign(ws)
    ok(run("modify", "--workflow", "b", "--set", "max_retries=7", "--yes"))
    assert {j.max_retries for j in ws.jobs(workflow="b")} == {7}
    assert {j.max_retries for j in ws.jobs(workflow="a")} == {3}
    ws.set_state(ids[7], "RUNNING", by_launcher=True)
    before = snapshot(ws)
    user_error(run("modify", "--workflow", "b", "--set", "num_nodes=2", "--yes"), "RUNNING")
    assert snapshot(ws) == before
    user_error(run("modify", "--set", "num_nodes=2", "--yes"), "say which jobs")


def test_retry_gives_a_fresh_budget_and_releases_the_children(run: Run, ws: Workspace) -> None:
    ws.add_app("t", "/bin/true")
    ws.add_app("s", "/bin/true")
    a = ws.add_job("a", app="t").id
    ws.set_state(a, "RUNNING", by_launcher=True)
    ws.set_state(a, "RUN_ERROR", by_launcher=True)
    ws.set_state(a, "FAILED")
    kid = ws.add_job("kid", app="t", parents=[a]).id
    grandkid = ws.add_job("grandkid", app="s", parents=[kid], stage_in=["/etc/hostname"]).id
    assert ws.job(kid).state == S.FAILED and ws.job(grandkid).state == S.FAILED
    r = ok(run("retry", "--name", "a", "--yes"))
    assert "retrying 1 job(s)" in r.stdout
    job = ws.job(a)
    assert job.state == S.PREPROCESSED and job.retry_count == 0
    assert ws.job(kid).state == S.AWAITING_PARENTS and ws.job(grandkid).state == S.AWAITING_PARENTS
    user_error(run("retry", str(a), "--yes"), "only FAILED and USER_KILLED")
