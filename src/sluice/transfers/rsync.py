"""rsync over ssh (`host:path`, `rsync://host/path`): argv lists, never a shell."""

from __future__ import annotations

import posixpath
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

from sluice.errors import one_line
from sluice.transfers.base import SyncTransfer, TransferError, parse_checksum, verify

_TIMEOUT_S = 3600
# rsync's exit codes for connection and partial-transfer errors (and ssh's 255): worth a retry
_TRANSIENT = (10, 11, 12, 23, 30, 35, 255)


def _run(argv: list[str]) -> None:
    if shutil.which("rsync") is None:
        raise TransferError("rsync not found on PATH; install rsync or stage with local paths")
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise TransferError(f"rsync did not finish in {_TIMEOUT_S} s", transient=True) from None
    if p.returncode != 0:
        raise TransferError(f"rsync failed ({p.returncode}): {one_line(p.stderr) or '(no output)'}",
                            transient=p.returncode in _TRANSIENT)


class RsyncTransfer(SyncTransfer):
    """``rsync -a`` to or from a remote host."""

    scheme: ClassVar[str] = "rsync"

    def copy(self, src: str, dest: Path, *, link: bool = False, checksum: str | None = None) -> list[Path]:
        """See :meth:`Transfer.copy`; ``link`` is ignored (a remote file cannot be linked to)."""
        name = posixpath.basename(urlparse(src).path if "://" in src else src.partition(":")[2])
        if checksum is not None:
            parse_checksum(checksum)
            if not name:
                raise TransferError(f"a checksum applies to one file; {src} names a directory's contents")
        target = dest / name if dest.is_dir() else dest
        _run(["rsync", "-a", "--", src, str(dest)])
        verify(target, checksum)
        return [dest]

    def put(self, src: Path, dest: str) -> list[Path]:
        """See :meth:`Transfer.put`."""
        _run(["rsync", "-a", "--", str(src), dest])
        return [src]
