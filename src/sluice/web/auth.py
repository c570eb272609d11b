"""Who may talk to the dashboard: a token once it listens beyond loopback, and browsers' cross-site requests.

Why each rule:

* On loopback only this machine's users reach the server, as for `sluice ls`; on any other address the
  campaign's names, commands and logs would be open to the network, so a token is required: generated with
  `secrets`, kept in `<workspace>/web.token` (mode 0600, reused on the next start so bookmarks keep working).
  A request brings it as `Authorization: Bearer <token>`, or once as `?token=` in a browser, which sets a
  SameSite=Strict, HttpOnly cookie and redirects to the same page without it (no token in the address bar).
* A page on another site can make the user's browser send requests here (a form POST, or DNS rebinding a
  name to 127.0.0.1). So on loopback the Host header must be a loopback name, and a state-changing request
  that says where it comes from (`Origin`) must come from this server.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from html import escape
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from sluice.errors import UserError

TOKEN_FILE = "web.token"
COOKIE = "sluice_token"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback(host: str) -> bool:
    """Whether host names this machine only (127.0.0.0/8, ::1, localhost); '' and 0.0.0.0 are every address."""
    h = host.strip().strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def load_token(workspace: Path) -> tuple[str, bool]:
    """The workspace's dashboard token and whether it was made just now. An existing file is used as it is
    (made private if others could read it); a new one is created with mode 0600 and O_EXCL, so two servers
    starting at once agree on one token."""
    path = workspace / TOKEN_FILE
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return _read_token(path), False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def _read_token(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}; remove it and start `sluice web` again") from None
    with os.fdopen(fd) as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UserError(f"{path} is not a regular file; remove it and start `sluice web` again")
        if st.st_mode & 0o077:
            os.fchmod(f.fileno(), 0o600)
        token = f.read(4096).strip()
    if len(token) < 16:
        raise UserError(f"{path} holds no usable token; remove it and start `sluice web` again")
    return token


def _given(request: Request) -> tuple[str | None, bool]:
    """The token the request carries, and whether it came in the query string."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), False
    q = request.query_params.get("token")
    if q:
        return q, True
    return request.cookies.get(COOKIE), False


def _host_name(host_header: str) -> str:
    """The host part of a Host header (`127.0.0.1:8765`, `[::1]:8765`, `localhost`)."""
    return urlsplit(f"//{host_header}").hostname or ""


def _refuse(request: Request, status: int, message: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    form = ("<form method=get><input name=token type=password placeholder='the token in web.token' size=44 "
            "autofocus> <button>Open</button></form>") if status == 401 else ""
    body = (f"<!doctype html><meta charset=utf-8><meta name=viewport content='width=device-width'>"
            f"<title>sluice: {status}</title><body style='font:16px system-ui;margin:3em'><h1>{status}</h1>"
            f"<p>{escape(message)}</p>{form}")
    return HTMLResponse(body, status_code=status, headers=headers)


Handler = Callable[[Request], Awaitable[Response]]


def guard(token: str | None, loopback: bool) -> Callable[[Request, Handler], Awaitable[Response]]:
    """The HTTP middleware enforcing the rules above (token None: no token is asked for)."""

    async def middleware(request: Request, call_next: Handler) -> Response:
        host = request.headers.get("host", "")
        if loopback and not is_loopback(_host_name(host)):
            return _refuse(request, 421, f"this server answers to loopback names only, not Host {host!r}")
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin and origin != "null" and \
                urlsplit(origin).netloc != host:
            return _refuse(request, 403, f"cross-origin request from {origin} refused")
        if token is None:
            return await call_next(request)
        given, in_query = _given(request)
        if given is None or not secrets.compare_digest(given.encode(), token.encode()):
            why = "a wrong token" if given else "no token"
            return _refuse(request, 401, f"this dashboard needs its token and got {why}: send "
                                         "'Authorization: Bearer TOKEN', or open the URL `sluice web` printed "
                                         "(?token=TOKEN); the token is in the workspace's web.token")
        if in_query and request.method == "GET" and not request.url.path.startswith("/api/"):
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            response: Response = RedirectResponse(request.url.path + (f"?{urlencode(rest)}" if rest else ""), 303)
        else:
            response = await call_next(request)
        if in_query:
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    return middleware
