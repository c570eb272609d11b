"""Local paths and file:// URLs: copies (or symlinks), with shell-style globs in the source."""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from sluice.transfers import TransferError


def _path(url: str) -> str:
    return os.path.expanduser(urlparse(url).path if url.startswith("file://") else url)


def copy(src: str, dest: Path, *, link: bool = False) -> list[Path]:
    matches = sorted(glob.glob(_path(src))) if glob.has_magic(src) else [_path(src)]
    if not matches or not os.path.exists(matches[0]):
        raise TransferError(f"stage-in source not found: {src}")
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
        out.append(target)
    return out


def put(src: Path, dest: str) -> list[Path]:
    d = Path(_path(dest))
    matches = sorted(glob.glob(str(src))) if glob.has_magic(str(src)) else [str(src)]
    if not matches or not os.path.exists(matches[0]):
        raise TransferError(f"stage-out source not found: {src}")
    if len(matches) > 1:
        d.mkdir(parents=True, exist_ok=True)
    out = []
    for m in matches:
        out += copy(m, d if d.is_dir() else d)
    return out
