"""Data staging by URL: a registry of transfer modules by scheme, each with the interface of
:class:`sluice.transfers.base.Transfer`, imported on first use.

Entries in a job's stage_in / stage_out are a URL string (the file keeps its name) or {"src": URL, "dest": PATH}.
Supported here: local paths and file:// (copy, or symlink with `link: true`), rsync/ssh `host:path` and
rsync://. A URL of any other scheme is a clear :class:`TransferError` naming the supported ones.

Adding a scheme is one line in :data:`TRANSFERS` plus one module with a :class:`Transfer` class.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sluice.errors import UserError
from sluice.transfers.base import (
    Item,
    Transfer,
    TransferError,
    TransferHandle,
    TransferState,
    TransferStatus,
)

__all__ = [
    "Item",
    "TRANSFERS",
    "Transfer",
    "TransferError",
    "TransferHandle",
    "TransferState",
    "TransferStatus",
    "copy",
    "entry",
    "get",
    "put",
    "scheme",
]

TRANSFERS: dict[str, str] = {
    "globus": "sluice.transfers.globus:GlobusTransfer",
    "http": "sluice.transfers.http:HttpTransfer",
    "https": "sluice.transfers.http:HttpTransfer",
    "local": "sluice.transfers.local:LocalTransfer",
    "rsync": "sluice.transfers.rsync:RsyncTransfer",
    "ssh": "sluice.transfers.rsync:RsyncTransfer",
}
"""Scheme (as :func:`scheme` names it) -> ``module:Class`` of its :class:`Transfer`."""

_loaded: dict[str, Transfer] = {}


def get(kind: str, url: str | None = None) -> Transfer:
    """The transfer for scheme ``kind`` (its module imported now if not yet); ``url`` only for the message."""
    target = TRANSFERS.get(kind)
    if target is None:
        where = f" ({url})" if url else ""
        raise TransferError(
            f"no transfer method for {kind}:// URLs{where}; supported schemes: {', '.join(sorted(TRANSFERS))}"
            " (a plain path or file:// is local, host:path is rsync)"
        )
    transfer = _loaded.get(target)
    if transfer is None:
        module, _, cls_name = target.partition(":")
        transfer = _loaded[target] = getattr(importlib.import_module(module), cls_name)()
    return transfer


def entry(item: Any) -> tuple[str, str | None, bool]:
    """(src, dest or None, link) from a stage entry; bad entries are user errors."""
    if isinstance(item, str):
        return item, None, False
    if isinstance(item, dict) and isinstance(item.get("src"), str):
        return item["src"], item.get("dest"), bool(item.get("link", False))
    raise UserError(f"bad stage entry {item!r}: give a URL string or {{\"src\": URL, \"dest\": PATH}}")


def scheme(url: str) -> str:
    """The registry key for ``url``: ``local`` for paths and file://, ``rsync`` for host:path, else its scheme.

    Without ``://``, a colon before the first slash means a remote ``host:path``, as rsync reads it (one letter
    before it is a drive, ``C:``, and local); write ``./a:b`` for a local name with a colon.
    """
    if url.startswith(("/", "./", "../", "~", "file:")):
        return "local"
    if "://" in url:
        return urlparse(url).scheme.lower() or "local"
    host, colon, _ = url.partition("/")[0].partition(":")
    return "rsync" if colon and len(host) > 1 else "local"


def copy(src: str, dest: Path, *, link: bool = False) -> list[Path]:
    """Bring src to dest (a file path or a directory that exists). Returns what was written."""
    return get(scheme(src), src).copy(src, dest, link=link)


def put(src: Path, dest: str) -> list[Path]:
    """Send a local file or glob to dest (stage-out)."""
    return get(scheme(dest), dest).put(src, dest)
