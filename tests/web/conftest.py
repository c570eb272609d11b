"""Fixtures for the dashboard: an app over a workspace, and a real uvicorn server on a free loopback port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the dashboard needs FastAPI: pip install -e '.[web,test]'")

from fastapi.testclient import TestClient  # noqa: E402

from sluice.api import Workspace  # noqa: E402
from sluice.web.app import create_app  # noqa: E402
from sluice.web.dashboard import Dashboard, Settings  # noqa: E402

LOCAL = "http://127.0.0.1:8765"
"""TestClient's base URL: a loopback Host, as the server's rebinding check wants on loopback."""
ARTIFACTS = Path(__file__).with_name("artifacts")
"""Screenshots of the browser tests (git-ignored), kept to look at after a run."""


def client_for(ws: Workspace, **settings: object) -> TestClient:
    """A TestClient over a fresh Dashboard; settings as in sluice.web.dashboard.Settings."""
    dash = Dashboard(ws, Settings(**settings))  # type: ignore[arg-type]
    return TestClient(create_app(dash), base_url=LOCAL, raise_server_exceptions=False)


@pytest.fixture
def campaign(ws: Workspace) -> Workspace:
    """Two workflows in several states: 30 sim jobs in `scan` (some finished, failed, running), a merge that
    waits on five of them, and 7 jobs in `other`."""
    ws.add_app("sim", "/bin/echo {x}")
    ws.add_app("ana", "/bin/echo merge")
    ids = ws.add_jobs([{"name": f"s{i}", "app": "sim", "params": {"x": i}, "workflow": "scan"} for i in range(30)])
    ws.add_job("merge", app="ana", parents=ids[:5], workflow="scan")
    ws.add_jobs([{"name": f"o{i}", "app": "sim", "params": {"x": i}, "workflow": "other"} for i in range(7)])
    for j in ids[10:14]:
        ws.set_state(j, "RUNNING", by_launcher=True)
    for j in ids[14:20]:
        ws.set_state(j, "RUNNING", by_launcher=True)
        ws.set_state(j, "RUN_DONE", by_launcher=True)
        ws.set_state(j, "POSTPROCESSED", by_launcher=True)
        ws.set_state(j, "JOB_FINISHED", by_launcher=True)
    for j in ids[20:23]:
        ws.kill(j)
    return ws


@pytest.fixture
def client(campaign: Workspace) -> Iterator[TestClient]:
    with client_for(campaign) as c:
        yield c


class Server:
    """A real uvicorn serving a Dashboard from a thread, on a free loopback port."""

    def __init__(self, ws: Workspace, **settings: object) -> None:
        import uvicorn

        from sluice.web import server

        self.dash = Dashboard(ws, Settings(host="127.0.0.1", port=0, **settings))  # type: ignore[arg-type]
        self.where = server.prepare(self.dash)
        self.url = self.where.url.rstrip("/")
        config = uvicorn.Config(create_app(self.dash), log_level="warning", access_log=False, lifespan="on")
        self.uv = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.uv.run, kwargs={"sockets": [self.where.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.uv.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.uv.should_exit = True
        self.thread.join(10)
        self.where.sock.close()
