"""Local paths and file:// URLs: copies (or symlinks), with shell-style globs in the source."""

from __future__ import annotations

import contextlib
import errno
import fcntl
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


def _place(src: str, dest: str) -> str:
    """Put a file at dest as cheaply as is safe: a copy-on-write clone where the file system has them (btrfs,
    XFS); else a hard link (no bytes copied, nothing dangles when the source goes), made read-only so that a job
    writing into its input cannot change its parent's output; else (another file system) a copy. What works
    between two file systems is learnt once (staging 10,000 files must not try a clone 10,000 times)."""
    st = os.stat(src)
    pair = (st.st_dev, os.stat(os.path.dirname(dest) or ".").st_dev)
    way = _WAYS.get(pair, "clone")
    if way == "clone":
        try:
            with open(src, "rb") as fi, open(dest, "wb") as fo:
                fcntl.ioctl(fo.fileno(), _FICLONE, fi.fileno())
            shutil.copystat(src, dest)
            _WAYS[pair] = "clone"
            return dest
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(dest)
            way = _WAYS[pair] = "link"
    if way == "link":
        try:
            os.link(src, dest)
            if st.st_mode & 0o222:
                os.chmod(dest, st.st_mode & ~0o222)
            return dest
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            _WAYS[pair] = "copy"
    return str(shutil.copy2(src, dest))


_WAYS: dict[tuple[int, int], str] = {}
"""(source device, destination device) -> the cheapest way that worked: clone, link or copy."""
_FICLONE = 0x40049409


class LocalTransfer(SyncTransfer):
    """Clones, hard links or copies on this machine's file systems."""

    scheme: ClassVar[str] = "local"

    def copy(self, src: str, dest: Path, *, link: bool = False, checksum: str | None = None) -> list[Path]:
        """See :meth:`Transfer.copy`. Files are placed by `_place` (a clone, a read-only hard link, or a copy):
        never a symbolic link, which would dangle once the source's directory is cleaned; ``link`` is accepted
        for old workflow files and means the same."""
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
            if os.path.isdir(m):
                shutil.copytree(m, target, copy_function=_place)
            else:
                _place(m, str(target))
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
