"""The JSON API over a real workspace on every backend: counts, keyset paging, jobs, history, errors, actions."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.web.conftest import client_for

from sluice.api import Workspace
from sluice.states import State


def one_line_error(r: Any, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}, body
    assert body["error"] and "\n" not in body["error"], body
    return str(body["error"])


def test_summary_matches_the_workspace(campaign: Workspace, client: TestClient) -> None:
    got = client.get("/api/summary").json()
    assert got["counts"] == campaign.summary()
    assert got["total"] == 38 and got["age_s"] >= 0
    scan = client.get("/api/summary", params={"workflow": "scan"}).json()
    assert scan["counts"] == campaign.summary(workflow="scan") and scan["total"] == 31
    # a later count (derived from the total on SQLite, by the largest state last time) is still exact
    campaign.kill(campaign.resolve("scan/s0"))
    again = client.get("/api/summary", params={"max_age": 0}).json()
    assert again["counts"] == campaign.summary()
    assert again["counts"]["USER_KILLED"] == 4


def test_paging_by_cursor_returns_every_job_exactly_once(campaign: Workspace, client: TestClient) -> None:
    for filters, expect in (({}, campaign.ids()), ({"workflow": "scan"}, campaign.ids(workflow="scan")),
                            ({"state": "PREPROCESSED,RUNNING"}, campaign.ids(state=["PREPROCESSED", "RUNNING"])),
                            ({"name": "s1*"}, campaign.ids(name="s1*"))):
        seen: list[int] = []
        after = None
        pages = 0
        while True:
            r = client.get("/api/jobs", params={**filters, "limit": 4, **({"after": after} if after else {})})
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [j["id"] for j in body["jobs"]]
            pages += 1
            after = body["next"]
            if after is None:
                break
        assert seen == expect, filters
        assert pages == max(1, -(-len(expect) // 4)), filters
    row = client.get("/api/jobs", params={"limit": 1}).json()["jobs"][0]
    assert row["name"] == "s0" and row["app"] == "sim" and row["workflow"] == "scan"


def test_a_job_its_history_and_relatives(campaign: Workspace, client: TestClient) -> None:
    merge = campaign.resolve("scan/merge")
    job = client.get(f"/api/jobs/{merge}").json()
    assert job["name"] == "merge" and job["state"] == State.AWAITING_PARENTS and job["path"].endswith(f"merge_{merge}")
    hist = client.get(f"/api/jobs/{merge}/history").json()
    assert [(e["from_state"], e["to_state"]) for e in hist] == \
           [(e.from_state, e.to_state) for e in campaign.history(merge)]
    rel = client.get(f"/api/jobs/{merge}/relatives", params={"limit": 3}).json()
    assert rel["n_parents"] == 5 and len(rel["parents"]) == 3 and rel["n_children"] == 0
    assert client.get("/api/workflows").json() == {"workflows": ["other", "scan"]}


def test_bad_requests_are_one_line_4xx_never_500(campaign: Workspace, client: TestClient) -> None:
    msg = one_line_error(client.get("/api/jobs", params={"state": "DONE"}), 400)
    assert "unknown state 'DONE'" in msg and "JOB_FINISHED" in msg and "USER_KILLED" in msg
    assert "limit" in one_line_error(client.get("/api/jobs", params={"limit": 0}), 422)
    assert "limit" in one_line_error(client.get("/api/jobs", params={"limit": 100_000}), 422)
    assert "after" in one_line_error(client.get("/api/jobs", params={"after": "x"}), 422)
    assert "after" in one_line_error(client.get("/api/jobs", params={"after": -1}), 422)
    assert "unknown app 'nope'" in one_line_error(client.get("/api/jobs", params={"app": "nope"}), 400)
    assert "job_id" in one_line_error(client.get("/api/jobs/abc"), 422)
    assert "no job 99999" in one_line_error(client.get("/api/jobs/99999"), 404)
    assert "no job 99999" in one_line_error(client.get("/api/jobs/99999/history"), 404)
    assert "stream" in one_line_error(client.get("/api/jobs/1/log", params={"stream": "x"}), 422)
    assert "no workflow" in one_line_error(client.get("/api/workflows/nope/graph"), 404)
    assert "no page" in one_line_error(client.get("/api/nothing"), 404)
    assert "not allowed" in one_line_error(client.delete("/api/summary"), 405)
    assert "max_age" in one_line_error(client.get("/api/summary", params={"max_age": -1}), 422)


def test_actions_are_refused_without_allow_actions(campaign: Workspace, client: TestClient) -> None:
    j = campaign.resolve("scan/s0")
    for verb in ("kill", "retry"):
        assert "--allow-actions" in one_line_error(client.post(f"/api/jobs/{j}/{verb}"), 403)
    assert campaign.job(j).state == State.PREPROCESSED
    page = client.get(f"/jobs/{j}")
    assert page.status_code == 200 and 'id="kill"' not in page.text
    assert client.post(f"/ui/jobs/{j}/kill").text.count("--allow-actions") == 1
    assert campaign.job(j).state == State.PREPROCESSED


def test_kill_and_retry_with_allow_actions(campaign: Workspace) -> None:
    j = campaign.resolve("scan/s0")
    with client_for(campaign, allow_actions=True) as c:
        assert c.get("/api/summary").json()["counts"]["USER_KILLED"] == 3
        r = c.post(f"/api/jobs/{j}/kill")
        assert r.status_code == 200 and r.json()["state"] == State.USER_KILLED
        assert c.get("/api/summary").json()["counts"]["USER_KILLED"] == 4  # the action dropped the snapshot
        assert "already ended" in one_line_error(c.post(f"/api/jobs/{j}/kill"), 400)
        r = c.post(f"/api/jobs/{j}/retry")
        assert r.status_code == 200 and r.json()["state"] == State.RESTART_READY
        assert campaign.job(j).state == State.RESTART_READY
        assert "only FAILED or USER_KILLED" in one_line_error(c.post(f"/api/jobs/{j}/retry"), 400)
        assert "no job 99999" in one_line_error(c.post("/api/jobs/99999/kill"), 404)
        # a browser page on another site cannot make the user's browser act here
        assert "cross-origin" in one_line_error(
            c.post(f"/api/jobs/{j}/kill", headers={"Origin": "http://evil.example"}), 403)
        assert campaign.job(j).state == State.RESTART_READY
        assert c.post(f"/api/jobs/{j}/kill", headers={"Origin": "http://127.0.0.1:8765"}).status_code == 200
        page = c.get(f"/jobs/{j}")
        assert 'id="retry"' in page.text and "actions on" in page.text
        # the page's buttons: the action, then a reload (htmx's HX-Refresh); a refusal is the one line, inline
        r = c.post(f"/ui/jobs/{j}/retry", headers={"HX-Request": "true"})
        assert r.headers.get("hx-refresh") == "true" and campaign.job(j).state == State.RESTART_READY
        r = c.post(f"/ui/jobs/{j}/retry", headers={"HX-Request": "true"})
        assert "hx-refresh" not in r.headers and "only FAILED or USER_KILLED" in r.text


def test_loopback_answers_loopback_host_names_only(campaign: Workspace, client: TestClient) -> None:
    """DNS rebinding: a name that resolves to 127.0.0.1 must not let another site read the dashboard."""
    assert "loopback" in one_line_error(client.get("/api/summary", headers={"Host": "evil.example"}), 421)
    page = client.get("/", headers={"Host": "<script>x</script>"})
    assert page.status_code == 421 and "<script>x" not in page.text and "&lt;script&gt;" in page.text
    for host in ("localhost:8765", "127.0.0.1", "[::1]:8765"):
        assert client.get("/api/summary", headers={"Host": host}).status_code == 200, host


def test_openapi_describes_the_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for p in ("/api/summary", "/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/history",
              "/api/jobs/{job_id}/kill", "/api/jobs/{job_id}/retry"):
        assert p in paths, p
    params = {q["name"] for q in paths["/api/jobs"]["get"]["parameters"]}
    assert {"state", "workflow", "name", "limit", "after"} <= params
    assert "JobPageOut" in schema["components"]["schemas"]
    assert not any(p.startswith("/ui/") or p == "/" for p in paths)  # the pages stay out of the schema
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/api/jobs/{job_id}/history" in docs.text and "cdn" not in docs.text.lower()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_graph_whole_and_collapsed(campaign: Workspace) -> None:
    with client_for(campaign) as c:
        g = c.get("/api/workflows/scan/graph").json()
        assert not g["collapsed"] and len(g["nodes"]) == 31 and len(g["edges"]) == 5
    with client_for(campaign, graph_max_jobs=10) as c:
        g = c.get("/api/workflows/scan/graph").json()
        assert g["collapsed"]
        assert {n["app"]: n["total"] for n in g["nodes"]} == {"ana": 1, "sim": 30}
        assert g["edges"] == [{"parent": "sim", "child": "ana", "count": 5}]
        page = c.get("/ui/workflows/scan/graph", headers={"HX-Request": "true"})
        assert page.status_code == 200 and "<svg" in page.text and "30 jobs" in page.text
