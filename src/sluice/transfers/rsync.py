"""rsync over ssh (`host:path`, `rsync://host/path`): argv lists, never a shell."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from sluice.transfers import TransferError


def _run(argv: list[str]) -> None:
    if shutil.which("rsync") is None:
        raise TransferError("rsync not found on PATH; install rsync or stage with local paths")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    if p.returncode != 0:
        # rsync's 10-12, 23, 30, 35 are connection / partial-transfer errors: worth a retry
        raise TransferError(f"rsync failed ({p.returncode}): {p.stderr.strip()[:300]}",
                            transient=p.returncode in (10, 11, 12, 23, 30, 35, 255))


def copy(src: str, dest: Path) -> list[Path]:
    _run(["rsync", "-a", "--", src, str(dest)])
    return [dest]


def put(src: Path, dest: str) -> list[Path]:
    _run(["rsync", "-a", "--", str(src), dest])
    return [src]
