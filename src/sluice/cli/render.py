"""Output: tables and key/value lists for people, JSON for programs.

Tables are drawn as plain text in rich's SIMPLE_HEAD layout (the look `sluice ls` always had), because importing
rich costs more than a quick read's query (~0.1 s); rich draws only what plain text cannot: a table wider than
the terminal (it wraps and truncates cells), cells with wide, combining or control characters or newlines, and
trees. Nothing is padded at the end of a line, so a piped table or `show` of a long value is not thousands of
trailing spaces.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import unicodedata
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

GAP = "   "
"""Between columns: rich's SIMPLE_HEAD with pad_edge=False, show_edge=False."""


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


def _styled() -> bool:
    """Bold headers and the like: only on a terminal that shows them."""
    return sys.stdout.isatty() and os.environ.get("TERM") != "dumb" and "NO_COLOR" not in os.environ


def width_of(text: str) -> int | None:
    """Terminal cells `text` takes when every character takes one; None for wide, combining or control
    characters (and newlines), which only rich measures right."""
    if text.isascii():
        return len(text) if text.isprintable() else None
    for ch in text:
        if (unicodedata.east_asian_width(ch) in "WF" or unicodedata.combining(ch)
                or unicodedata.category(ch)[0] == "C"):
            return None
    return len(text)


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None,
                styled: bool = False, max_width: int | None = None) -> str | None:
    """The table as rich's SIMPLE_HEAD draws it (lines right-stripped), or None when plain text cannot: a
    cell only rich measures, or a table wider than max_width."""
    widths = []
    for c in columns:
        w = width_of(c)
        if w is None:
            return None
        widths.append(w)
    for r in rows:
        for i, v in enumerate(r):
            w = width_of(v)
            if w is None:
                return None
            if w > widths[i]:
                widths[i] = w
    total = sum(widths) + len(GAP) * (len(widths) - 1)
    if max_width is not None and total > max_width:
        return None
    rule = "─" if (sys.stdout.encoding or "").lower().replace("-", "") in ("utf8", "utf16", "utf32") else "-"

    def line(cells: Sequence[str]) -> str:
        return GAP.join(v + " " * (w - len(v)) for v, w in zip(cells, widths, strict=True)).rstrip()

    head = line(columns)
    out = []
    if title is not None:
        if max_width is not None:  # a terminal: rich centres the title over the table
            title = (" " * ((total - len(title)) // 2) + title).rstrip()
        out.append(f"\x1b[3m{title}\x1b[0m" if styled else title)
    out.append(f"\x1b[1m{head}\x1b[0m" if styled else head)
    out.append(rule * total)
    out += [line(r) for r in rows]
    return "\n".join(out)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    cells = [[cell(v) for v in r] for r in rows]
    tty = sys.stdout.isatty()
    text = plain_table(columns, cells, title, styled=_styled(),
                       max_width=shutil.get_terminal_size().columns if tty else None)
    if text is not None:
        click.echo(text)
        return
    from rich import box
    from rich.table import Table

    t = Table(*columns, box=box.SIMPLE_HEAD, title=title, show_edge=False, pad_edge=False,
              header_style="bold")
    for r in cells:
        t.add_row(*r)
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
    """`key   value` lines, keys in a column; a value of several lines continues under its first."""
    items = [(k, cell(v)) for k, v in pairs]
    w = max((len(k) for k, _ in items), default=0)
    bold = _styled()
    out = [title] if title is not None else []
    for k, v in items:
        first, *rest = v.split("\n") or [""]
        key = f"\x1b[1m{k}\x1b[0m" + " " * (w - len(k)) if bold else k.ljust(w)
        out.append(f"{key}{GAP}{first}".rstrip())
        out += [f"{' ' * (w + len(GAP))}{x}".rstrip() for x in rest]
    click.echo("\n".join(out))
