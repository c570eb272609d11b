"""Local paths and file:// URLs: copies (or symlinks), with shell-style globs in the source."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from sluice.transfers.base import SyncTransfer, TransferError, parse_checksum, verify


def _path(url: str) -> str:
    return os.path.expanduser(urlparse(url).path if url.startswith("file://") else url)


def _matches(pattern: str) -> list[str]:
    """The paths a source names (a glob's matches, sorted), or [] if it names nothing that exists."""
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    return matches if matches and os.path.exists(matches[0]) else []


class LocalTransfer(SyncTransfer):
    """Copies and symlinks on this machine's file systems."""

    scheme: ClassVar[str] = "local"

    def copy(self, src: str, dest: Path, *, link: bool = False, checksum: str | None = None) -> list[Path]:
        """See :meth:`Transfer.copy`; ``link`` makes symlinks to the absolute source paths (a checksum is checked
        through the link)."""
        matches = _matches(_path(src))
        if not matches:
            raise TransferError(f"stage-in source not found: {src}")
        if checksum is not None:
            parse_checksum(checksum)
            if len(matches) > 1 or os.path.isdir(matches[0]):
                what = f"{len(matches)} paths" if len(matches) > 1 else "a directory"
                raise TransferError(f"a checksum applies to one file; {src} names {what}")
        out = []
        for m in matches:
            target = dest / os.path.basename(m) if dest.is_dir() else dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                else:
                    target.unlink()
            if link:
                target.symlink_to(os.path.abspath(m))
            elif os.path.isdir(m):
                shutil.copytree(m, target)
            else:
                shutil.copy2(m, target)
            verify(target, checksum)
            out.append(target)
        return out

    def put(self, src: Path, dest: str) -> list[Path]:
        """See :meth:`Transfer.put`; several matches go into ``dest`` as a directory (made)."""
        d = Path(_path(dest))
        matches = _matches(str(src))
        if not matches:
            raise TransferError(f"stage-out source not found: {src}")
        if len(matches) > 1:
            d.mkdir(parents=True, exist_ok=True)
        out = []
        for m in matches:
            out += self.copy(m, d)
        return out
