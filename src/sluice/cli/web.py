"""`sluice web`: the dashboard, a small web server over the workspace (read-only unless told otherwise).

Only click at import time: `sluice --help` lists this verb without importing FastAPI; the server's modules
(sluice.web) and the API are imported when the command runs.
"""

from __future__ import annotations

import click

from sluice.cli.common import CONTEXT, open_ws
from sluice.errors import UserError


@click.command(context_settings=CONTEXT,
               epilog="Example: sluice web --port 8765  (then open http://127.0.0.1:8765/)")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs the token kept in <workspace>/web.token "
                   "(made on first use and printed once).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--allow-actions", is_flag=True,
              help="Let the dashboard and POST /api/jobs/ID/kill|retry kill jobs and retry failed ones "
                   "(otherwise every action is refused with 403).")
def web(host: str, port: int, allow_actions: bool) -> None:
    """Serve the dashboard: live counts by state, the job table, each job's history and output, workflow
    graphs, launchers and batch jobs, and a JSON API under /api/ (its schema at /docs)."""
    try:
        from sluice.web import server
    except ImportError as e:
        raise UserError(f"sluice web needs FastAPI, uvicorn and Jinja2 ({e.name} is missing): "
                        "pip install 'sluice[web]'") from None
    server.run(open_ws(), host=host, port=port, allow_actions=allow_actions, echo=click.echo)


COMMANDS = [web]
