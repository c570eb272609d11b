"""The dashboard's parts on their own: shared snapshots, log tails, the graph layout, and the HTML pages."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from tests.web.conftest import client_for

from sluice.api import Workspace, views
from sluice.web import logs, svg
from sluice.web.cache import Snapshots


def test_a_snapshot_is_computed_once_however_many_ask() -> None:
    calls: list[int] = []

    def slow(_old: object) -> int:
        calls.append(1)
        time.sleep(0.2)
        return len(calls)

    snaps = Snapshots(min_interval=60)
    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(snaps.get("k", slow).value)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [1] * 8 and len(calls) == 1
    assert snaps.get("k", slow, max_age=0).value == 2  # max_age asks for a fresh one, now
    snaps.close()


def test_a_stale_snapshot_is_served_while_one_refresh_runs() -> None:
    n = {"v": 0}

    def count(old: object) -> int:
        n["v"] += 1
        time.sleep(0.5)  # a refresh made inline would take this long: far above the bound below, even loaded
        return n["v"]

    snaps = Snapshots(min_interval=0.05, factor=1)
    assert snaps.get("k", count).value == 1
    time.sleep(0.1)
    t0 = time.perf_counter()
    assert snaps.get("k", count).value == 1  # stale: served at once, a refresh starts behind it
    assert time.perf_counter() - t0 < 0.25
    deadline = time.monotonic() + 5
    while snaps.get("k", count).value == 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert snaps.get("k", count).value >= 2

    def broken(old: object) -> int:
        raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        snaps.get("other", broken)
    time.sleep(0.1)
    assert snaps.get("k", broken).value >= 2  # a failed refresh keeps the last good answer
    snaps.close()


def test_a_log_tail_is_bounded_clean_and_refuses_links_and_fifos(tmp_path: Path) -> None:
    f = tmp_path / "job.out"
    with f.open("wb") as out:
        for i in range(50_000):
            out.write(f"line {i}\n".encode())
        out.write(b"\x1b[31mred\x1b[0m and \xff bad utf-8\n")
        out.write(b"progress 10%\rprogress 50%\rprogress 100%\n")
        out.write(b"x" * 5000 + b"\n")
    t = logs.tail(f, 100)
    assert len(t.lines) == 100 and t.partial and t.size == f.stat().st_size
    assert t.lines[-4] == "line 49999" and t.lines[-3] == "red and \ufffd bad utf-8"
    assert t.lines[-2] == "progress 100%" and len(t.lines[-1]) < 2100
    assert logs.tail(tmp_path / "missing.out").note == "no such file (yet)"
    (tmp_path / "link.out").symlink_to(f)
    assert "symbolic link" in (logs.tail(tmp_path / "link.out").note or "")
    os.mkfifo(tmp_path / "fifo.out")
    t0 = time.perf_counter()
    assert logs.tail(tmp_path / "fifo.out").note == "not a regular file: not read"
    assert time.perf_counter() - t0 < 1
    assert logs.job_log(tmp_path, "..", "out").note


def test_layers_follow_the_dag_and_survive_cycles() -> None:
    layer = svg.layer_of([1, 2, 3, 4], [(1, 2), (2, 3), (1, 3), (4, 3)])
    assert layer == {1: 0, 2: 1, 3: 2, 4: 0}
    assert svg.layer_of(["a", "b"], [("a", "b"), ("b", "a")]) in ({"a": 0, "b": 1}, {"a": 1, "b": 0})
    cols = svg.order([1, 2, 3, 4, 5], [(1, 4), (2, 5), (3, 4)], svg.layer_of([1, 2, 3, 4, 5], [(1, 4), (2, 5), (3, 4)]))
    assert sorted(map(sorted, cols)) == [[1, 2, 3], [4, 5]]
    g = views.Graph("w", False, [{"id": 1, "name": "<b>", "state": "RUNNING", "app": "a"}], [])
    out = svg.render(g)
    assert out.startswith("<svg") and "&lt;b&gt;" in out and "<b>" not in out


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_pages_render_and_escape(campaign: Workspace) -> None:
    campaign.add_job("<script>alert(1)<\\script>", app="sim", params={"x": 1}, workflow="scan")
    j = campaign.resolve("scan/s0")
    job_dir = campaign.job(j).path
    job_dir.mkdir(parents=True)
    (job_dir / "s0.out").write_text("hello <i>from</i> s0\n")
    with client_for(campaign) as c:
        for url in ("/", "/jobs", "/jobs?state=FAILED,USER_KILLED", f"/jobs/{j}", "/workflows", "/workflows/scan",
                    "/ui/workflows/scan/graph", "/launchers", "/ui/summary", "/ui/summary?workflow=scan&bar=1",
                    "/ui/events", "/jobs?name=s1*&after=3", "/jobs?before=20"):
            r = c.get(url)
            assert r.status_code == 200, (url, r.text[:300])
            assert "<script>alert" not in r.text, url
        page = c.get(f"/jobs/{j}").text
        assert "hello &lt;i&gt;from&lt;/i&gt; s0" in page and 'id="history"' in page
        table = c.get("/jobs", params={"state": "USER_KILLED"}, headers={"HX-Request": "true",
                                                                         "HX-Target": "jobtable"}).text
        assert "<html" not in table and table.count("<tr data-id=") == 3
        bad = c.get("/jobs", params={"state": "BOGUS"})
        assert bad.status_code == 400 and "unknown state" in bad.text
        missing = c.get("/jobs/99999")
        assert missing.status_code == 404 and "no job 99999" in missing.text and "<html" in missing.text
        assert c.get("/workflows/nope").status_code == 404
        assert c.get("/jobs", params={"limit": 0}).status_code == 422
        assert c.get("/static/htmx.min.js").status_code == 200
