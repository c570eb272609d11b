"""A full disk (or an exhausted quota) is the environment's fault, never a job's: how the launcher tells.

The database says so itself (sluice.errors.DiskFull, from the store). The launcher's own files (a job's
directory, its output files, a hook's log) fail with ENOSPC or EDQUOT. A job's own process cannot say why it
failed, so a job that fails while the file system of its directory is (nearly) out of room or inodes is taken as
a victim of the full disk: retrying it at once would only burn its retries in a loop.
"""

from __future__ import annotations

import errno
import os
import re

from sluice.errors import DiskFull, Fault, one_line

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
LOW_BYTES = 1 << 20
"""Less room than this on a job's file system counts as full."""
_FULL_TEXT = re.compile(r"no space left on device|disk quota exceeded", re.I)


def is_full(e: BaseException) -> bool:
    """Whether this error is a full disk or quota (the database's, a file's, or a transfer's)."""
    if isinstance(e, DiskFull):
        return True
    if isinstance(e, OSError):
        return e.errno in FULL_ERRNOS
    return isinstance(e, Fault) and bool(_FULL_TEXT.search(str(e)))


def reason(e: BaseException) -> str:
    """What a launcher stopped by this fault says, in one line: "disk full: ..." or "database error: ..."."""
    msg = one_line(e, 200)
    prefix = "disk full" if is_full(e) else "database error"
    return msg if msg.startswith(prefix) else f"{prefix}: {msg}"


def again(e: BaseException) -> str:
    """A fault's one line once the first has been told: short for a disk that is still full."""
    return "the disk is still full" if is_full(e) else one_line(e, 200)


def low_space(path: str) -> str | None:
    """"12 KiB free on PATH" when the file system holding `path` is (nearly) out of room or inodes, else None."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if st.f_blocks and free < LOW_BYTES:
        return f"{free // 1024} KiB free on {path}"
    if st.f_files and not st.f_favail:  # file systems without an inode limit say 0 of 0
        return f"no inodes free on {path}"
    return None
