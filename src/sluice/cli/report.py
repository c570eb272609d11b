"""`sluice report`: how the campaign went, as text and as PNG/SVG plots, all computed from the event log."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import click

from sluice.cli.common import CONTEXT, open_ws
from sluice.errors import UserError

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """A time: `2h`, `30m`, `90s`, `1d` (that long ago), epoch seconds, or a local ISO date and time."""
    now = time.time() if now is None else now
    m = _AGO.match(text)
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise UserError(f"--since {text!r}: give a time ago (30m, 2h, 1d), epoch seconds, or a date and time "
                        "such as 2026-12-01T08:00") from None


@click.command(context_settings=CONTEXT,
               epilog="Example: sluice report --workflow scan --since 6h --out scan-report")
@click.option("--workflow", "--wf", "workflows", multiple=True, metavar="W", help="Only workflow W. Repeatable.")
@click.option("--since", metavar="T", help="Only from T: 30m, 2h, 1d ago, epoch seconds, or 2026-12-01T08:00.")
@click.option("--out", metavar="DIR", default="sluice-report", show_default=True,
              help="Where the plots go: throughput, utilization, states, failures (.png and .svg).")
@click.option("--no-plots", is_flag=True, help="Text only (needs no matplotlib).")
@click.option("--bins", type=click.IntRange(min=1, max=2000), default=60, show_default=True,
              help="Points of the time series.")
@click.option("--json", "as_json", is_flag=True, help="The report's numbers as JSON (plots still go to --out).")
def report(workflows: tuple[str, ...], since: str | None, out: str, no_plots: bool, bins: int,
           as_json: bool) -> None:
    """How the campaign went: jobs finished over time (throughput), nodes and cores busy against the
    allocations (utilization), time spent in each state, failures over time and by cause (with the end of
    a failed job's stderr, and the parameters failed jobs share), the longest runs.

    Needs the `report` extra for its plots and numbers: pip install 'sluice[report]'.
    """
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise UserError("sluice report needs numpy and matplotlib: pip install 'sluice[report]'") from None
    from sluice.cli import render
    from sluice.report import build, text

    r = build(open_ws(), workflow=list(workflows) or None, since=parse_since(since) if since else None, bins=bins)
    written: list[Path] = []
    if r.edges and not no_plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("plots need matplotlib: pip install 'sluice[report]', or pass --no-plots") from None
        from sluice.report import plots

        written = plots.draw(r, Path(out))
    if as_json:
        render.print_json({**r.to_dict(), "plots": [str(p) for p in written]})
        return
    click.echo("\n".join(text.summary(r)))
    if written:
        click.echo(f"plots: {', '.join(str(p) for p in written if p.suffix == '.png')} (and .svg)")


COMMANDS = [report]
