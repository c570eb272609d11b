"""Stage entries: what a job's `stage_in` and `stage_out` lists may say, checked when the job is added, and
turned into transfer items when the job is staged.

A stage-in entry is one of

* ``"URL"``: the file (or the glob's matches) lands in the job's directory under its own name;
* ``{"src": URL, "dest": PATH, "checksum": "sha256:HEX"}``: ``dest`` is relative to the job's directory;
* ``{"parents": GLOB, "dest": DIR, "layout": "by-parent" | "flat"}``: the files of every parent that match GLOB
  (relative to each parent's directory). With ``by-parent`` (the default) each parent's files land in
  ``DIR/<parent name>_<parent id>/``, so 200 parents that each wrote ``unweighted.dat`` give 200 files side by
  side; with ``flat`` they land in ``DIR`` itself, and two parents giving the same name fail the stage-in
  instead of one overwriting the other.

A stage-out entry is ``"URL"`` (the job's file named like the URL's last part goes there) or
``{"src": PATH_OR_GLOB, "dest": URL}`` with ``src`` relative to the job's directory.

URLs: a plain path or ``file://`` (local), ``host:path`` or ``rsync://`` (rsync over ssh), ``http(s)://``,
``globus://ENDPOINT/path``: whatever the transfer registry knows.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from sluice.errors import UserError
from sluice.transfers.base import Item, TransferError, parse_checksum

LAYOUTS = ("by-parent", "flat")
_IN_KEYS = frozenset({"src", "dest", "checksum", "link"})
_PARENT_KEYS = frozenset({"parents", "dest", "layout"})
_OUT_KEYS = frozenset({"src", "dest"})


@dataclass(frozen=True)
class Entry:
    """One checked entry. For stage-in, `src` is a URL and `dest` a path inside the job's directory (None: the
    directory itself); for parents, `src` is the glob; for stage-out, `src` is the job's path or glob and
    `dest` the URL."""

    src: str
    dest: str | None = None
    parents: bool = False
    layout: str = "by-parent"
    checksum: str | None = None


def kind_of(url: str) -> str:
    """The transfer registry's name for a URL's scheme (`local`, `rsync`, `http`, ...)."""
    from sluice.transfers import scheme

    return scheme(url)


def known_schemes() -> list[str]:
    from sluice.transfers import TRANSFERS

    return sorted(TRANSFERS)


def check_url(url: Any, where: str) -> str:
    """A URL a transfer module can take, or a UserError naming the problem."""
    if not isinstance(url, str) or not url.strip():
        raise UserError(f"{where}: give a URL or path, got {url!r}")
    kind = kind_of(url)
    if kind not in known_schemes():
        raise UserError(f"{where}: unknown URL scheme {kind!r} in {url!r}; supported: "
                        f"{', '.join(known_schemes())} (a plain path is local, host:path is rsync over ssh)")
    if "://" in url and kind != "local":
        p = urlparse(url)
        if not p.netloc:
            raise UserError(f"{where}: {url!r} names no host (or Globus endpoint); e.g. {kind}://HOST/path")
        if not p.path or p.path == "/":
            raise UserError(f"{where}: {url!r} names no file; e.g. {kind}://{p.netloc}/path/to/file")
    elif kind == "rsync" and not url.partition(":")[2]:
        raise UserError(f"{where}: {url!r} names no remote path; e.g. host:/path/to/file")
    return url


def inside(path: Any, where: str) -> str:
    """A relative path that stays inside the job's directory."""
    if not isinstance(path, str) or not path.strip():
        raise UserError(f"{where}: give a path relative to the job's directory, got {path!r}")
    p = PurePosixPath(path)
    if p.is_absolute() or path.startswith("~") or ".." in p.parts:
        raise UserError(f"{where}: {path!r} is outside the job's directory; give a relative path without '..'")
    return path


def check_checksum(value: Any, where: str) -> str:
    """The transfers' own rule (base.parse_checksum), checked when the job is added."""
    try:
        algo, digest = parse_checksum(str(value))
    except TransferError as e:
        raise UserError(f"{where}: {e}") from None
    return f"{algo}:{digest}"


def stage_in(items: Iterable[Any]) -> list[Entry]:
    """Check a job's stage_in list; the entries, or a UserError naming the bad one."""
    out = []
    for i, item in enumerate(items):
        where = f"stage_in[{i}]"
        if isinstance(item, str):
            out.append(Entry(check_url(item, where)))
            continue
        if not isinstance(item, Mapping):
            raise UserError(f"{where}: give a URL, {{src: URL, dest: PATH}} or {{parents: GLOB}}, got {item!r}")
        if "parents" in item:
            bad = set(item) - _PARENT_KEYS
            if bad:
                raise UserError(f"{where}: unknown key {sorted(bad)[0]!r}; a parents entry takes "
                                f"{', '.join(sorted(_PARENT_KEYS))}")
            layout = item.get("layout", "by-parent")
            if layout not in LAYOUTS:
                raise UserError(f"{where}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
            dest = inside(item["dest"], where) if item.get("dest") not in (None, ".") else None
            out.append(Entry(inside(item["parents"], where), dest, parents=True, layout=layout))
            continue
        bad = set(item) - _IN_KEYS
        if bad or "src" not in item:
            raise UserError(f"{where}: a stage-in entry takes src (a URL) and optionally dest, checksum; "
                            f"got {sorted(item)}")
        dest = inside(item["dest"], where) if item.get("dest") not in (None, ".") else None
        checksum = check_checksum(item["checksum"], where) if item.get("checksum") else None
        out.append(Entry(check_url(item["src"], where), dest, checksum=checksum))
    return out


def stage_out(items: Iterable[Any]) -> list[Entry]:
    """Check a job's stage_out list."""
    out = []
    for i, item in enumerate(items):
        where = f"stage_out[{i}]"
        if isinstance(item, str):
            url = check_url(item, where)
            name = PurePosixPath(urlparse(url).path if "://" in url else url.rpartition(":")[2]).name
            if not name or url.endswith("/"):
                raise UserError(f"{where}: {url!r} ends in '/': give {{src: FILE, dest: URL}} to say which file")
            out.append(Entry(name, url))
            continue
        if not isinstance(item, Mapping) or set(item) - _OUT_KEYS or "src" not in item or "dest" not in item:
            raise UserError(f"{where}: give a URL or {{src: PATH, dest: URL}}, got {item!r}")
        out.append(Entry(inside(item["src"], where), check_url(item["dest"], where)))
    return out


def check(stage_in_items: Sequence[Any] | None, stage_out_items: Sequence[Any] | None) -> None:
    """What add_jobs and modify call: both lists checked, nothing returned."""
    if stage_in_items:
        stage_in(stage_in_items)
    if stage_out_items:
        stage_out(stage_out_items)


@dataclass(frozen=True)
class Parent:
    """What planning needs of a parent: its name, id and directory."""

    id: int
    name: str
    path: Path


def plan_in(entries: Sequence[Entry], job_dir: Path, parents: Sequence[Parent]) -> list[Item]:
    """The items that stage a job in. Parents' files are found now (on the host that stages); a flat layout
    with two parents giving one name is a TransferError naming both (nothing is ever overwritten)."""
    items: list[Item] = []
    for e in entries:
        if not e.parents:
            items.append(Item(e.src, str(job_dir / e.dest) if e.dest else str(job_dir), checksum=e.checksum))
            continue
        base = job_dir / e.dest if e.dest else job_dir
        taken: dict[str, Parent] = {}
        for p in parents:
            matches = sorted(glob.glob(str(p.path / e.src))) if glob.has_magic(e.src) else (
                [str(p.path / e.src)] if (p.path / e.src).exists() else [])
            for m in matches:
                rel = os.path.relpath(m, p.path)
                if e.layout == "flat":
                    other = taken.get(rel)
                    if other is not None:
                        raise TransferError(f"parents {other.name} ({other.id}) and {p.name} ({p.id}) both give "
                                            f"{rel}: with layout flat one would overwrite the other; use layout "
                                            "by-parent (each parent's files in <name>_<id>/)")
                    taken[rel] = p
                    target = base / rel
                else:
                    target = base / f"{p.name}_{p.id}" / rel
                items.append(Item(m, str(target)))
            if not matches:  # a parent that finished without its output: the child must not run on less
                raise TransferError(f"parent {p.name} ({p.id}) has no file matching {e.src!r} in {p.path}")
    return items


def plan_out(entries: Sequence[Entry], job_dir: Path) -> list[Item]:
    """The items that stage a job out: its files (globs expand on the sending side) to their URLs."""
    return [Item(str(job_dir / e.src), e.dest or "", put=True) for e in entries]
