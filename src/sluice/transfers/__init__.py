"""Data staging by URL, one module per scheme behind one function: `fetch(url, dest_dir)`.

Entries in a job's stage_in / stage_out are a URL string (the file keeps its name) or {"src": URL, "dest": PATH}.
Supported here: local paths and file:// (copy, or symlink with `link: true`), rsync/ssh `host:path` and
rsync://. Schemes that need an outside service say so clearly when used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sluice.errors import UserError


class TransferError(Exception):
    """A transfer failed; `transient` ones (network, remote busy) are worth retrying."""

    def __init__(self, msg: str, transient: bool = False) -> None:
        super().__init__(msg)
        self.transient = transient


def entry(item: Any) -> tuple[str, str | None, bool]:
    """(src, dest or None, link) from a stage entry; bad entries are user errors."""
    if isinstance(item, str):
        return item, None, False
    if isinstance(item, dict) and isinstance(item.get("src"), str):
        return item["src"], item.get("dest"), bool(item.get("link", False))
    raise UserError(f"bad stage entry {item!r}: give a URL string or {{\"src\": URL, \"dest\": PATH}}")


def scheme(url: str) -> str:
    if url.startswith(("/", "./", "../", "~")):
        return "local"
    p = urlparse(url)
    if p.scheme in ("", "file"):
        return "rsync" if ":" in url and not p.scheme else "local"
    if len(p.scheme) == 1:  # not a URL scheme: something like C:
        return "local"
    return p.scheme


def copy(src: str, dest: Path, *, link: bool = False) -> list[Path]:
    """Bring src to dest (a file path or a directory that exists). Returns what was written."""
    kind = scheme(src)
    if kind == "local":
        from sluice.transfers import local

        return local.copy(src, dest, link=link)
    if kind in ("rsync", "ssh"):
        from sluice.transfers import rsync

        return rsync.copy(src, dest)
    raise TransferError(f"no transfer method for {kind}:// URLs ({src}); supported: local paths, rsync/ssh")


def put(src: Path, dest: str) -> list[Path]:
    """Send a local file or glob to dest (stage-out)."""
    kind = scheme(dest)
    if kind == "local":
        from sluice.transfers import local

        return local.put(src, dest)
    if kind in ("rsync", "ssh"):
        from sluice.transfers import rsync

        return rsync.put(src, dest)
    raise TransferError(f"no transfer method for {kind}:// URLs ({dest}); supported: local paths, rsync/ssh")
