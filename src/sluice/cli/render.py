"""Output: rich tables for people, JSON for programs. rich is imported only when a table is drawn."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console, RenderableType


def console() -> Console:
    """A console on the current stdout: terminal width on a tty, no wrapping when piped."""
    from rich.console import Console

    out = sys.stdout
    tty = out.isatty()
    width = shutil.get_terminal_size().columns if tty else 4000
    return Console(file=out, width=width, soft_wrap=not tty, highlight=False, emoji=False, markup=False)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=_json_default, sort_keys=False))


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, set | frozenset | tuple):
        return list(o)
    return str(o)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    from rich import box
    from rich.table import Table

    t = Table(*columns, box=box.SIMPLE_HEAD, title=title, show_edge=False, pad_edge=False,
              header_style="bold")
    for r in rows:
        t.add_row(*(cell(v) for v in r))
    console().print(t)


def show(renderable: RenderableType) -> None:
    console().print(renderable)


def cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict | list):
        return json.dumps(v, default=str)
    return str(v)


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int((ts % 1) * 1000):03d}"


def key_values(pairs: Iterable[tuple[str, Any]], title: str | None = None) -> None:
    from rich import box
    from rich.table import Table

    t = Table(box=box.SIMPLE, show_header=False, title=title, show_edge=False, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in pairs:
        t.add_row(k, cell(v))
    console().print(t)


@contextmanager
def progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal for long operations (big submits, removals); nothing when piped. Yields
    a function taking how many more items are done."""
    if total < 5000 or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console_err(), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def console_err() -> Console:
    from rich.console import Console

    return Console(stderr=True)
