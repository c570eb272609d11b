"""Who may use the dashboard: no token on loopback; beyond it a token (0600 file, reused), as a bearer header or
a one-time ?token= that sets a cookie; and the real server started by `sluice web`."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tests.web.conftest import client_for

from sluice.api import Workspace
from sluice.web import auth, server
from sluice.web.dashboard import Dashboard, Settings


def test_loopback_needs_no_token(sqlite_ws: Workspace) -> None:
    dash = Dashboard(sqlite_ws, Settings(host="127.0.0.1", port=0))
    where = server.prepare(dash)
    try:
        assert dash.settings.token is None and not (sqlite_ws.path / auth.TOKEN_FILE).exists()
        assert not any("?token=" in line or "web.token" in line for line in server.banner(dash, where))
    finally:
        where.sock.close()
    with client_for(sqlite_ws) as c:
        assert c.get("/api/summary").status_code == 200


def test_beyond_loopback_a_token_is_made_once_private_and_reused(sqlite_ws: Workspace,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`--host 0.0.0.0`: the token is generated, stored 0600, printed once; the next start reuses it."""
    monkeypatch.setattr(server, "bind", lambda host, port: socket.create_server(("127.0.0.1", 0)))
    path = sqlite_ws.path / auth.TOKEN_FILE
    dash = Dashboard(sqlite_ws, Settings(host="0.0.0.0", port=0))
    where = server.prepare(dash)
    where.sock.close()
    token = dash.settings.token
    assert token and len(token) >= 32 and where.token_created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == token
    shown = server.banner(dash, where)
    assert sum(token in line for line in shown) == 1 and any("every address" in line for line in shown)
    again = Dashboard(sqlite_ws, Settings(host="0.0.0.0", port=0))
    where = server.prepare(again)
    where.sock.close()
    assert again.settings.token == token and not where.token_created
    assert not any(token in line for line in server.banner(again, where))
    path.chmod(0o644)  # loosened by hand: made private again on the next start
    assert auth.load_token(sqlite_ws.path) == (token, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_requests_without_the_token_get_401(sqlite_ws: Workspace) -> None:
    token = auth.load_token(sqlite_ws.path)[0]
    with client_for(sqlite_ws, host="0.0.0.0", token=token) as c:
        for url in ("/api/summary", "/api/jobs", "/openapi.json"):
            r = c.get(url)
            assert r.status_code == 401 and "token" in r.json()["error"], url
            assert r.headers["www-authenticate"] == "Bearer"
        page = c.get("/")
        assert page.status_code == 401 and "name=token" in page.text  # a form to paste the token into
        assert c.get("/api/summary", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/summary", params={"token": "wrong"}).status_code == 401
        assert c.get("/api/summary", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert c.get("/api/summary", headers={"Host": "example.org"},
                     params={"token": token}).status_code == 200  # any Host once it is not loopback-only
        c.cookies.clear()
        # a browser: ?token= once sets the cookie and redirects to the page without it
        r = c.get("/jobs", params={"token": token, "state": "READY"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/jobs?state=READY"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert c.get("/jobs", params={"state": "READY"}).status_code == 200  # the cookie is enough now
        assert c.get("/api/summary").status_code == 200


def test_the_token_file_must_be_usable(sqlite_ws: Workspace) -> None:
    path = sqlite_ws.path / auth.TOKEN_FILE
    path.write_text("short\n")
    with pytest.raises(Exception, match="no usable token"):
        auth.load_token(sqlite_ws.path)
    path.unlink()
    os.symlink("/etc/hostname", path)
    with pytest.raises(Exception, match="remove it"):
        auth.load_token(sqlite_ws.path)


def test_sluice_web_serves_on_a_free_port_and_says_why_it_cannot(sqlite_ws: Workspace, tmp_path: Path) -> None:
    """The real command: uvicorn in its own process, the URL on stdout; a port in use is a one-line error."""
    sqlite_ws.add_app("sim", "/bin/true")
    sqlite_ws.add_jobs([{"name": f"j{i}", "app": "sim"} for i in range(5)])
    cmd = [sys.executable, "-m", "sluice", "-w", str(sqlite_ws.path), "web", "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("sluice web: http://127.0.0.1:"), line
        url = line.split()[2]
        port = int(url.rsplit(":", 1)[1].strip("/"))
        body = _get(url + "api/summary")
        assert '"PREPROCESSED":5' in body
        busy = subprocess.run([*cmd[:-1], str(port)], capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and busy.stdout == ""
        assert busy.stderr.startswith("sluice: error: cannot listen on 127.0.0.1:") and "--port" in busy.stderr
        assert busy.stderr.count("\n") == 1
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode in (0, -15)
    help_ = subprocess.run([sys.executable, "-m", "sluice", "--help"], capture_output=True, text=True, timeout=60)
    assert " web " in help_.stdout


def _get(url: str) -> str:
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return str(r.read().decode())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
