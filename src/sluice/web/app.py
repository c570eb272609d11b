"""The FastAPI application: routes, static files, the access rules (auth.py) and one-line errors.

Why every error is mapped here: a dashboard that answers a typo with a 500 and a traceback teaches people to
ignore it. So a bad parameter is 422, the user's mistake (sluice's UserError: an unknown state, an illegal
transition) 400, a missing job 404, an action on a read-only server 403, the database not answering 503:
each one line, as JSON under /api/ and as a page elsewhere. Anything else is a bug: 500, one line to the
client, the traceback to the server's log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from sluice.errors import Fault, UserError, one_line
from sluice.web import api, auth, pages
from sluice.web.dashboard import Dashboard, Forbidden, NotFound

log = logging.getLogger("sluice.web")
STATIC = Path(__file__).with_name("static")


def create_app(dash: Dashboard) -> FastAPI:
    """The application serving `dash`: pages at /, the JSON API at /api/, its schema at /openapi.json."""
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        dash.warm()
        yield
        dash.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None,  # /docs is pages.api_docs: no CDN
                  title="sluice", summary="A campaign's jobs, counts, graphs and launchers",
                  description="Read-only unless the server was started with `--allow-actions`. Errors are "
                              "`{\"error\": \"one line\"}`.", version=_version())
    app.state.dashboard = dash
    s = dash.settings
    app.middleware("http")(auth.guard(s.token, auth.is_loopback(s.host)))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)
    for exc, status in ((UserError, 400), (NotFound, 404), (Forbidden, 403), (Fault, 503)):
        app.add_exception_handler(exc, _handler(status))
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _bug)
    return app


def _version() -> str:
    """The installed sluice's version (read from its metadata: importing `sluice` itself would be upward)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sluice")
    except PackageNotFoundError:
        return "unknown"


def _answer(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": message}, status_code=status)
    return pages.error_page(request, request.app.state.dashboard, status, message)


def _handler(status: int) -> Any:
    async def handle(request: Request, exc: Exception) -> Response:
        return _answer(request, status, one_line(exc))

    return handle


async def _invalid(request: Request, exc: Exception) -> Response:
    """A parameter of the wrong type or range: which one, what is wrong, what was given, in one line."""
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path", "body"))
        got = f" (got {err['input']!r})" if "input" in err and err["input"] is not None else ""
        parts.append(f"bad {where or 'request'}: {str(err.get('msg', 'invalid')).rstrip('.').lower()}{got}")
    return _answer(request, 422, "; ".join(parts) or "bad request")


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    msg = str(exc.detail)
    if exc.status_code == 404:
        msg = f"no page {request.url.path}; the API is listed at /docs"
    elif exc.status_code == 405:
        msg = f"{request.method} is not allowed on {request.url.path}"
    return _answer(request, exc.status_code, msg)


async def _bug(request: Request, exc: Exception) -> Response:
    log.exception("sluice web: %s %s failed", request.method, request.url.path)
    return _answer(request, 500, f"internal error: {type(exc).__name__}: {one_line(exc)}")
