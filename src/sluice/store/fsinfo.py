"""Which file system holds the SQLite database, and whether a second host is about to share it.

SQLite in WAL mode keeps its lock table in a memory-mapped `-shm` file. Processes on one host share it through
the page cache; processes on two hosts reaching one file over NFS, Lustre or GPFS each see their own copy, so
their writes interleave unguarded and the campaign's database is corrupted, silently, hours later. The classic
way in: the service on a login node and a launcher on a compute node, one `sluice.db` in a shared home.

One host on NFS is safe (home directories often are NFS), so the rule refuses only when a second host would
use the file, and says what fixes it (`sluice dbserver start`):

* this process runs inside a batch job submitted from another host (it is on a compute node), or
* a launcher session with a fresh heartbeat is recorded for another host.

The file system type comes from `statfs(2)` through libc (`os.statvfs` does not return `f_type`): it answers
for the path itself, through symlinks, bind mounts and automounts. `/proc/self/mountinfo` adds the mount's
source and the FUSE subtype (`fuse.sshfs` is shared, `fuse.bindfs` is not), and answers when statfs cannot.
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import text

from sluice.errors import UserError

FUSE = 0x65735546
SHARED_MAGIC: dict[int, str] = {
    0x6969: "nfs", 0xFF534D42: "cifs", 0xFE534D42: "smb2", 0x517B: "smb", 0x0BD00BD0: "lustre",
    0x47504653: "gpfs", 0x19830326: "beegfs", 0x00C36400: "ceph", FUSE: "fuse", 0x5346414F: "afs",
    0x6B414653: "afs", 0x01161970: "gfs2", 0x7461636F: "ocfs2", 0xAAD7AAEA: "panfs", 0x73757245: "coda",
    0x013111A8: "ibrix", 0x564C: "ncp",
}
"""statfs f_type values of file systems that several hosts mount at once."""
LOCAL_MAGIC: dict[int, str] = {
    0xEF53: "ext4", 0x01021994: "tmpfs", 0x794C7630: "overlay", 0x58465342: "xfs", 0x9123683E: "btrfs",
    0x858458F6: "ramfs", 0x2FC12FC1: "zfs", 0x73717368: "squashfs", 0xE0F5E1E2: "erofs", 0x4D44: "vfat",
    0x5346544E: "ntfs", 0xF2F52010: "f2fs",
}
SHARED_NAMES = frozenset({"nfs", "nfs4", "lustre", "gpfs", "cifs", "smb3", "smbfs", "beegfs", "ceph", "afs",
                          "gfs2", "ocfs2", "panfs", "coda", "ncpfs", "glusterfs", "9p", "virtiofs"})
"""mountinfo fstype names of the same (used when statfs cannot answer)."""
LOCAL_FUSE = frozenset({"bindfs", "fuse-overlayfs", "lxcfs", "gvfsd-fuse", "portal", "squashfuse", "snapfuse",
                        "appimagelauncherfs", "encfs", "gocryptfs", "ntfs-3g", "fuseblk"})
"""FUSE subtypes backed by this host alone; any other FUSE file system (sshfs, s3fs, gcsfuse, juicefs, ...)
counts as shared."""
BATCH_JOBS: tuple[tuple[str, str | None], ...] = (
    ("SLURM_JOB_ID", "SLURM_SUBMIT_HOST"), ("PBS_JOBID", "PBS_O_HOST"), ("LSB_JOBID", "LSB_SUB_HOST"),
    ("COBALT_JOBID", None),
)
"""A batch job's id variable and the variable naming the host it was submitted from (Cobalt has none)."""
FRESH_S = 60.0
"""A launcher session whose heartbeat is younger than this is alive (the launchers' own staleness limit)."""


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo."""

    point: str
    fstype: str
    source: str


@dataclass(frozen=True)
class FsInfo:
    """The file system holding a path: its name (e.g. `nfs4`, `fuse.sshfs`), whether several hosts may mount
    it, and where it is mounted from."""

    name: str
    shared: bool
    magic: int | None = None
    mount: Mount | None = None

    def describe(self) -> str:
        m = self.mount
        return f"{self.name} ({m.source} on {m.point})" if m else self.name


_libc: Any = None
_OCTAL = re.compile(r"\\([0-7]{3})")


def statfs_magic(path: str | os.PathLike[str]) -> int | None:
    """statfs(2)'s f_type for path, or None when libc cannot be asked. f_type is the first field of struct
    statfs on every Linux ABI (a long; 32 bits wide on 32-bit ones), so only that field is read."""
    global _libc
    import ctypes  # here, not at the top: opening an SQLite workspace on a local disk never pays for it twice

    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's statfs among them
        buf = ctypes.create_string_buffer(512)  # struct statfs is 120 bytes on x86_64
        if _libc.statfs(os.fsencode(path), buf) != 0:
            return None
        return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF
    except (OSError, AttributeError, ValueError):
        return None


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (\\040)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a mountinfo text, in its order (a later mount on the same point hides an earlier one).
    Lines that do not parse are skipped: a kernel that adds fields must not stop a workspace from opening."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        f, r = left.split(), right.split()
        if not sep or len(f) < 5 or len(r) < 2:
            continue
        out.append(Mount(point=_unescape(f[4]), fstype=r[0], source=_unescape(r[1])))
    return out


def mount_of(path: str | os.PathLike[str], mounts: Sequence[Mount]) -> Mount | None:
    """The mount holding path (resolved): the longest mount point above it, the last one listed on a tie."""
    p = os.path.realpath(path)
    best: Mount | None = None
    for m in mounts:
        pt = m.point.rstrip("/") or "/"
        if (p == pt or p.startswith(pt + "/") or pt == "/") and (best is None or len(pt) >= len(best.point)):
            best = Mount(pt, m.fstype, m.source)
    return best


def classify(magic: int | None, mount: Mount | None) -> FsInfo:
    """Shared or not, from statfs's magic first (it speaks for the path itself) and the mount table second."""
    fstype = mount.fstype if mount else None
    if magic == FUSE:
        sub = (fstype or "fuse").removeprefix("fuse.")
        return FsInfo(fstype or "fuse", sub not in LOCAL_FUSE, magic, mount)
    if magic in SHARED_MAGIC:
        return FsInfo(fstype if fstype and fstype in SHARED_NAMES else SHARED_MAGIC[magic], True, magic, mount)
    if magic in LOCAL_MAGIC:
        return FsInfo(fstype or LOCAL_MAGIC[magic], False, magic, mount)
    if fstype is None:
        return FsInfo(f"0x{magic:x}" if magic is not None else "unknown", False, magic, None)
    if fstype.startswith("fuse."):
        return FsInfo(fstype, fstype.removeprefix("fuse.") not in LOCAL_FUSE, magic, mount)
    return FsInfo(fstype, fstype in SHARED_NAMES, magic, mount)


def fs_of(path: str | os.PathLike[str], mountinfo: str | None = None) -> FsInfo:
    """The file system holding path (or its nearest existing parent: the database file may not exist yet).
    The mount table is read only when it can change the answer or name a shared mount."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    magic = statfs_magic(p)
    if magic in LOCAL_MAGIC and mountinfo is None:
        return FsInfo(LOCAL_MAGIC[magic], False, magic, None)
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
    mounts = parse_mountinfo(mountinfo)
    fs = classify(magic, mount_of(p, mounts))
    src = fs.mount.source if fs.mount else ""
    if fs.magic == FUSE and fs.shared and src.startswith("/") and Path(src).is_dir():
        # a FUSE view of a local directory (bindfs, most overlays) is as shared as the directory it shows;
        # sshfs, s3fs, glusterfs and the like name a remote source, which is no local path
        under = classify(statfs_magic(src), mount_of(src, mounts))
        if under.magic != FUSE:
            return FsInfo(fs.name, under.shared, magic, fs.mount)
    return fs


def _short(host: str) -> str:
    return host.split(".")[0].lower()


def submit_host(env: Mapping[str, str], here: str) -> str | None:
    """The other host this process's batch job came from, when it runs on a compute node; None outside a batch
    job, or when the job runs on the host it was submitted from (a single-machine cluster)."""
    for job_var, host_var in BATCH_JOBS:
        if env.get(job_var):
            sub = env.get(host_var, "") if host_var else ""
            if not sub:
                return "the login node"
            return None if _short(sub) == _short(here) else sub
    return None


def refusal(fs: FsInfo, db_path: str, here: str, *, submitted_from: str | None,
            others: Sequence[tuple[int, str]]) -> str | None:
    """Why opening the SQLite file at db_path would be dangerous, in one line; None when it is safe.

    `others` are the live launcher sessions (id, host) of other hosts. A file system one host owns is always
    safe, and so is a shared one used from one host only.
    """
    if not fs.shared:
        return None
    if submitted_from is not None:
        who = f"this host ({here}) runs a batch job submitted from {submitted_from}"
    elif others:
        sid, host = others[0]
        who = f"launcher session {sid} on {host} is using it from another host than this one ({here})"
    else:
        return None
    return (f"the workspace's SQLite database {db_path} is on a shared file system, {fs.describe()}, and {who}: "
            "SQLite on a network file system is corrupted by writers on two hosts; run `sluice dbserver start "
            "--migrate` on the login node to move the workspace to its own PostgreSQL server")


def check_sqlite(engine: Any, db_path: str | None) -> None:
    """Refuse (UserError) to open an SQLite database that a second host would share over the network.

    Costs one statfs on a local file system; the sessions are read only when the file system is shared.
    """
    if not db_path or db_path == ":memory:":
        return
    fs = fs_of(Path(db_path).parent)
    if not fs.shared:
        return
    here = socket.gethostname()
    sub = submit_host(os.environ, here)
    others: list[tuple[int, str]] = []
    if sub is None:
        q = text("SELECT id, host FROM launcher_sessions WHERE ended_at IS NULL AND heartbeat_at > :t ORDER BY id")
        with engine.connect() as conn:
            others = [(int(r[0]), str(r[1])) for r in conn.execute(q, {"t": time.time() - FRESH_S})
                      if _short(str(r[1])) != _short(here)]
    why = refusal(fs, db_path, here, submitted_from=sub, others=others)
    if why:
        raise UserError(why)
