"""`sluice wait` and the live view it shares with `sluice ls --watch`: jobs by state, how many ended, and the
rate they end at over the last ~10 s.

On a terminal the view redraws in place (rich Live). Piped, `wait` prints one summary line at the end, so a
script can `sluice wait --workflow scan && next-step` and log one line; `ls --watch` prints a line whenever the
counts change. Exit codes of `wait` are for scripts: 0 every selected job finished, 1 some failed or were
killed, 2 a usage error (no job matches), 3 an environmental fault (the database did not answer), 4 the
--timeout ran out, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import sys
from collections import deque
from typing import TYPE_CHECKING, Any

import click

from sluice.cli.common import CONTEXT, build_filters, filter_options, open_ws
from sluice.errors import UserError

if TYPE_CHECKING:
    from sluice.api import Workspace
    from sluice.api.progress import Snapshot

EXIT_FAILED = 1
"""Every selected job ended, and some FAILED or were USER_KILLED."""
EXIT_TIMEOUT = 4
"""--timeout ran out first (not 3: that is sluice's exit code for a fault of the environment)."""
EXIT_INTERRUPTED = 130
WINDOW_S = 10.0
BAR = 30


class Rate:
    """Jobs ended per second over the last `window` seconds of snapshots (all of them until that much time has
    passed). Never negative: a re-run job leaves an end state, but nothing "un-ends" a rate."""

    def __init__(self, window: float = WINDOW_S) -> None:
        self.window = window
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, elapsed: float, done: int) -> float:
        self.samples.append((elapsed, done))
        while len(self.samples) > 2 and self.samples[1][0] <= elapsed - self.window:
            self.samples.popleft()
        t0, d0 = self.samples[0]
        return max(0.0, (done - d0) / (elapsed - t0)) if elapsed > t0 else 0.0


def bar(frac: float, width: int = BAR) -> str:
    """A bar of block characters, eighths included, `width` cells wide at frac 1."""
    eighths = round(max(0.0, min(1.0, frac)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")


def clock(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def view_lines(snap: Snapshot, rate: float, title: str = "") -> list[str]:
    """The live view: one head line (ended of total, the rate, the time left at that rate), then a line and a
    bar per state."""
    total, done = snap.total, snap.done
    pct = 100.0 * done / total if total else 100.0
    eta = f", about {clock((total - done) / rate)} left" if rate > 0 and done < total else ""
    head = (f"{title + ': ' if title else ''}{done:,} of {total:,} job(s) ended ({pct:.1f}%), "
            f"{rate:.1f}/s over the last {WINDOW_S:g} s{eta}; {clock(snap.elapsed)} elapsed")
    width = max((len(s) for s in snap.counts), default=0)
    digits = max((len(f"{n:,}") for n in snap.counts.values()), default=1)
    rows = [f"  {s:<{width}}  {n:>{digits},}  {bar(n / total if total else 0)}".rstrip()
            for s, n in snap.counts.items()]
    return [head, f"  [{bar(done / total if total else 1, BAR).ljust(BAR)}]", *rows]


def counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {s}" for s, n in counts.items()) or "no jobs"


def watch(ws: Workspace, filters: dict[str, Any], *, until_done: bool, timeout: float | None = None,
          poll: float = 1.0, title: str = "") -> Snapshot | None:
    """Poll the selection (Workspace.snapshots) and show it: live on a terminal; piped, a line per change
    unless `until_done` (then nothing: the caller prints the end). Returns the last snapshot; WaitTimeout and
    KeyboardInterrupt pass through."""
    rate = Rate()
    last: Snapshot | None = None
    snaps = ws.snapshots(poll=poll, timeout=timeout, until_done=until_done, **filters)
    if sys.stdout.isatty():
        from rich.live import Live
        from rich.text import Text

        from sluice.cli import render

        with Live(console=render.console(), auto_refresh=False) as live:
            for snap in snaps:
                r = rate.add(snap.elapsed, snap.done)
                live.update(Text("\n".join(view_lines(snap, r, title))), refresh=True)
                last = snap
        return last
    import time

    for snap in snaps:
        r = rate.add(snap.elapsed, snap.done)
        if not until_done and (last is None or snap.counts != last.counts):
            click.echo(f"{time.strftime('%H:%M:%S')} {snap.done:,}/{snap.total:,} ended, {r:.1f}/s: "
                       f"{counts_text(snap.counts)}")
        last = snap
    return last


@click.command(context_settings=CONTEXT,
               epilog="Example: sluice wait --workflow scan --timeout 3600 && python analyse.py\n\n"
                      "Exit codes: 0 every job finished, 1 some FAILED or were USER_KILLED, 2 no job matches "
                      "(or another usage error), 3 the database did not answer, 4 --timeout ran out, "
                      "130 Ctrl-C.")
@filter_options
@click.option("--timeout", type=click.FloatRange(min=0), metavar="S", help="Give up after S seconds (exit 4).")
@click.option("--poll", type=click.FloatRange(min=0.05), default=1.0, show_default=True, metavar="S",
              help="Seconds between looks at the database (longer when a look is slow).")
def wait(timeout: float | None, poll: float, **kw: Any) -> None:
    """Wait until every selected job has ended: JOB_FINISHED, FAILED or USER_KILLED.

    The filters are those of `ls`. A --state filter picks the jobs once, at the start; the others are
    applied at every look, so jobs added to the workflow meanwhile are waited for too. On a terminal a live
    view shows the jobs by state and the rate they end at; piped, one line at the end.
    """
    from sluice.api.progress import WaitTimeout

    ws = open_ws()
    filters = build_filters(ws, kw)
    try:
        last = watch(ws, filters, until_done=True, timeout=timeout, poll=poll)
    except WaitTimeout as e:
        left = {s: n for s, n in e.counts.items() if s not in ("JOB_FINISHED", "FAILED", "USER_KILLED")}
        click.echo(f"sluice: timed out after {timeout:g} s: {sum(left.values()):,} of {sum(e.counts.values()):,} "
                   f"job(s) not ended ({counts_text(left)})")
        sys.exit(EXIT_TIMEOUT)
    except KeyboardInterrupt:
        click.echo("sluice: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if last is None or last.total == 0:
        raise UserError("no jobs match; nothing to wait for (see `sluice ls` with the same filters)")
    click.echo(f"sluice: {last.total:,} job(s) ended in {last.elapsed:.1f} s: {counts_text(last.counts)}")
    if last.bad:
        sys.exit(EXIT_FAILED)


COMMANDS = [wait]
