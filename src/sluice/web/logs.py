"""The tail of a job's stdout or stderr (`<name>.out` / `<name>.err` in its directory), read safely.

Why "safely": the files belong to running jobs and can be anything: gigabytes long (only the last 256 KiB
are read, with pread, never the whole file), still being written, not UTF-8, full of terminal escapes and
carriage-return progress bars, or replaced by a symlink or a FIFO (refused: a symlink could point the server
at any file its user can read, and opening a FIFO would block a worker). The text is then escaped by the
template like any other value.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

MAX_BYTES = 256 * 1024
MAX_LINE = 2000
STREAMS = {"out": "stdout", "err": "stderr"}
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass
class Tail:
    """The last lines of one file; `note` says why there are none (missing, refused) or that it was cut."""

    path: str
    lines: list[str]
    size: int = 0
    modified: float | None = None
    note: str | None = None
    partial: bool = False


def tail(path: Path, lines: int = 100, max_bytes: int = MAX_BYTES) -> Tail:
    """The last `lines` lines of path, from at most its last `max_bytes` bytes."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return Tail(str(path), [], note="no such file (yet)")
    except OSError as e:
        why = "a symbolic link: not followed" if e.errno == errno.ELOOP else (e.strerror or "cannot open")
        return Tail(str(path), [], note=why)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Tail(str(path), [], note="not a regular file: not read")
        start = max(0, st.st_size - max_bytes)
        data = os.pread(fd, st.st_size - start, start)
    except OSError as e:
        return Tail(str(path), [], note=e.strerror or "cannot read")
    finally:
        os.close(fd)
    if start > 0:  # the first line read is probably cut: drop it
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else data
    text = data.decode("utf-8", errors="replace")
    every = text.split("\n")  # not splitlines(): a carriage return overwrites within a line, it does not end one
    if every and every[-1] == "":
        every.pop()
    out = [clean(line) for line in every[-max(1, lines) :]]
    partial = start > 0 or len(every) > len(out)
    return Tail(str(path), out, st.st_size, st.st_mtime, None, partial)


def clean(line: str) -> str:
    """One line as a terminal would show it last: escapes removed, a carriage return's overwrite kept."""
    line = _ANSI.sub("", line)
    if "\r" in line:
        line = line.rstrip("\r").rsplit("\r", 1)[-1]
    line = _CONTROL.sub("", line.replace("\t", "    "))
    return line if len(line) <= MAX_LINE else line[:MAX_LINE] + " …"


def job_log(job_dir: Path, job_name: str, stream: str, lines: int = 100) -> Tail:
    """A job's stdout ("out") or stderr ("err"): `<name>.<stream>` in its directory, as the launcher writes it."""
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {', '.join(STREAMS)}")
    if "/" in job_name or job_name in ("", ".", ".."):
        return Tail(str(job_dir), [], note="the job's name cannot name a file")
    return tail(job_dir / f"{job_name}.{stream}", lines)
