"""Starting the dashboard: the listening socket, the token rule, and uvicorn.

Why the socket is bound here, before uvicorn: a port in use or a host that is not this machine's is then the
user's one-line error (exit 2) instead of a log line and an exit from inside uvicorn; port 0 picks a free port
(the tests use it) and the real one is printed. The server is its own process with its own read-only use of
the workspace: whatever happens to it (a crash, Ctrl-C, a slow client) never reaches a launcher.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sluice.errors import UserError
from sluice.web import auth
from sluice.web.dashboard import Dashboard, Settings

if TYPE_CHECKING:
    from sluice.api import Workspace

DEFAULT_PORT = 8765


@dataclass
class Listening:
    """A bound socket and what to tell the user about it."""

    sock: socket.socket
    url: str
    token_created: bool


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv4 or IPv6, whichever the name gives first)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                          flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise UserError(f"cannot listen on {host!r}: {e.strerror}; give an address of this machine, e.g. "
                        "--host 127.0.0.1") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        hint = "pick another --port (or 0 for any free one)" if e.errno == 98 else "check --host"
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}; {hint}") from None
    sock.setblocking(False)
    return sock


def prepare(dash: Dashboard) -> Listening:
    """Bind the socket and settle the token: none on loopback, else the workspace's (made if missing)."""
    s = dash.settings
    created = False
    if not auth.is_loopback(s.host) and s.token is None:
        s.token, created = auth.load_token(dash.ws.path)
    sock = bind(s.host, s.port)
    s.port = sock.getsockname()[1]
    shown = f"[{s.host}]" if ":" in s.host else s.host
    return Listening(sock, f"http://{shown}:{s.port}/", created)


def banner(dash: Dashboard, where: Listening) -> list[str]:
    """What `sluice web` prints at start: where it listens, its mode, and the token once, when it is new."""
    s = dash.settings
    mode = "kill and retry allowed" if s.allow_actions else "read-only (--allow-actions to kill and retry)"
    lines = [f"sluice web: {where.url} for workspace {dash.ws.path}, {mode}"]
    if s.token is not None and where.token_created:
        lines.append(f"sluice web: the token (shown once; kept in {dash.ws.path / auth.TOKEN_FILE}, mode 0600):")
        lines.append(f"  {where.url}?token={s.token}")
    elif s.token is not None:
        lines.append(f"sluice web: a token is required; it is in {dash.ws.path / auth.TOKEN_FILE}")
    if s.host in ("0.0.0.0", "::", ""):
        lines.append("sluice web: listening on every address of this machine")
    return lines


def serve(dash: Dashboard, where: Listening, *, on_ready: Callable[[], None] | None = None) -> None:
    """Run uvicorn on the bound socket until Ctrl-C or SIGTERM. Access logs are off: every open tab polls."""
    import uvicorn

    from sluice.web.app import create_app

    config = uvicorn.Config(create_app(dash), log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready()
    try:
        server.run(sockets=[where.sock])
    finally:
        where.sock.close()


def run(ws: Workspace, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, allow_actions: bool = False,
        echo: Callable[[str], None] = print) -> None:
    """`sluice web`: serve the dashboard of workspace `ws` until stopped."""
    dash = Dashboard(ws, Settings(host=host, port=port, allow_actions=allow_actions))
    where = prepare(dash)
    for line in banner(dash, where):
        echo(line)
    serve(dash, where)
