"""Event-triggered jobs: one job per new file in a directory, once the file is completely written.

The between-shot case: a diagnostic writes a shot file every 15 minutes and its analysis must finish before the
next shot. The watcher hears of a file the moment its writer closes it (inotify IN_CLOSE_WRITE / IN_MOVED_TO on
Linux; elsewhere, or for files already there, it waits until size and mtime hold still for `settle` seconds).

Exactly once, across restarts and kill -9: a file's job has a name made from its path, and the watcher adds it
only if its workflow holds no job of that name (the index on names answers); adding is one transaction, so a
watcher killed at any moment either added the job or did not. One watcher per directory and workflow (an flock).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import fnmatch
import logging
import os
import select
import signal
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sluice.api import Workspace
from sluice.errors import UserError

log = logging.getLogger("sluice.watch")

IN_CLOSE_WRITE, IN_MOVED_TO = 0x08, 0x80
_EVENT = struct.Struct("iIII")


@dataclass
class Watch:
    """What to watch and what job each file gets."""

    directory: Path
    app: str
    pattern: str = "*"
    workflow: str = "watch"
    params: dict[str, str] = field(default_factory=dict)
    """Param templates: `{path}`, `{name}` (the file's name), `{stem}` are filled per file."""
    deadline_min: float | None = None
    priority: int = 0
    settle_s: float = 1.0
    poll_s: float = 0.2


def job_name(directory: Path, path: Path) -> str:
    """A job name from the file's path under the directory (names cannot hold '/')."""
    return str(path.relative_to(directory)).replace("/", ":")


class Watcher:
    """`Watcher(ws, Watch(...)).run()` adds jobs until SIGTERM/SIGINT (or `stop()`); `scan()` is one pass."""

    def __init__(self, ws: Workspace, w: Watch, *, clock: Callable[[], float] = time.time) -> None:
        if not w.directory.is_dir():
            raise UserError(f"{w.directory} is not a directory; give the directory new files appear in")
        ws.app(w.app)  # an unknown app is the user's mistake now, not at the first file
        for k, v in w.params.items():
            try:
                v.format(path="p", name="n", stem="s")
            except (KeyError, IndexError, ValueError):
                raise UserError(f"--param {k}={v}: only {{path}}, {{name}} and {{stem}} are filled in") from None
        self.ws, self.w, self.clock = ws, w, clock
        self.directory = w.directory.resolve()
        self.seen: dict[str, tuple[int, float, float]] = {}  # path -> (size, mtime, since when unchanged)
        self.done: set[str] = set()
        self.stopped = False
        self.added = 0

    def scan(self, ready: set[str] | None = None) -> list[int]:
        """Add the jobs of the files that are complete: those the kernel said were closed (`ready`), and those
        whose size and mtime held still for `settle` seconds. The ids added."""
        now = self.clock()
        complete: list[Path] = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError as e:
            log.warning("watch %s: cannot list it: %s", self.directory, e)
            return []
        for entry in entries:
            if entry.path in self.done or not entry.is_file() or not self._wanted(entry.name):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            key = (st.st_size, st.st_mtime)
            prev = self.seen.get(entry.path)
            if ready and entry.path in ready:
                complete.append(Path(entry.path))
            elif prev is None or prev[:2] != key:
                self.seen[entry.path] = (*key, now)
            elif now - prev[2] >= self.w.settle_s:
                complete.append(Path(entry.path))
        return self._add(sorted(complete), now)

    def _wanted(self, name: str) -> bool:
        """The pattern, as a shell reads it: a hidden name (an atomic writer's `.shot.part`, an editor's swap
        file) matches only a pattern that starts with a dot."""
        if name.startswith(".") and not self.w.pattern.startswith("."):
            return False
        return fnmatch.fnmatch(name, self.w.pattern)

    def _add(self, files: list[Path], now: float) -> list[int]:
        if not files:
            return []
        names = {job_name(self.directory, f): f for f in files}
        there = {j.name for name in names for j in self.ws.jobs(workflow=self.w.workflow, name=name)}
        specs = []
        for name, f in names.items():
            self.done.add(str(f))
            self.seen.pop(str(f), None)
            if name in there:
                continue
            fill = {"path": str(f), "name": f.name, "stem": f.stem}
            spec: dict[str, Any] = {"name": name, "app": self.w.app, "workflow": self.w.workflow,
                                    "params": {k: v.format(**fill) for k, v in self.w.params.items()},
                                    "tags": {"watched": str(f)}, "priority": self.w.priority}
            if self.w.deadline_min is not None:
                spec["deadline"] = now + self.w.deadline_min * 60
            specs.append(spec)
        ids = self.ws.add_jobs(specs) if specs else []
        self.added += len(ids)
        for jid, s in zip(ids, specs, strict=True):
            log.info("watch: job %s for %s", jid, s["tags"]["watched"])
        return ids

    def run(self, *, until: Callable[[], bool] | None = None) -> int:
        """Watch until stopped; the number of jobs added."""
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)} \
            if _main_thread() else {}
        try:
            with _lock(self.ws.config.logs_dir, self.directory, self.w.workflow), _inotify(self.directory) as fd:
                self.scan()
                while not self.stopped and not (until and until()):
                    ready = _read_events(fd, self.directory, self.w.poll_s) if fd is not None else set()
                    if fd is None:
                        time.sleep(self.w.poll_s)
                    self.ws.retry(lambda r=ready: self.scan(r))  # type: ignore[misc]
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return self.added

    def stop(self) -> None:
        self.stopped = True

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stopped = True


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextmanager
def _lock(logs: Path, directory: Path, workflow: str) -> Iterator[IO[str]]:
    """One watcher per directory and workflow: two would race to add the same file's job."""
    logs.mkdir(parents=True, exist_ok=True)
    key = f"{directory}:{workflow}".replace("/", "_")[-150:]
    f = open(logs / f"watch-{key}.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise UserError(f"a watcher already watches {directory} for workflow {workflow!r}; stop it first") from None
    try:
        yield f
    finally:
        f.close()


@contextmanager
def _inotify(directory: Path) -> Iterator[int | None]:
    """An inotify fd watching `directory` for closed-after-write and moved-in files; None where there is none."""
    libc_name = ctypes.util.find_library("c")
    fd = -1
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None
        if libc is not None and hasattr(libc, "inotify_init1"):
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(directory), IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
                os.close(fd)
                fd = -1
    except (OSError, AttributeError):
        fd = -1
    try:
        yield fd if fd >= 0 else None
    finally:
        if fd >= 0:
            os.close(fd)


def _read_events(fd: int, directory: Path, timeout: float) -> set[str]:
    """Paths the kernel says were closed after writing (or moved in), waiting up to `timeout` for the first."""
    r, _, _ = select.select([fd], [], [], timeout)
    out: set[str] = set()
    if not r:
        return out
    try:
        buf = os.read(fd, 65536)
    except BlockingIOError:
        return out
    i = 0
    while i + _EVENT.size <= len(buf):
        _wd, mask, _cookie, length = _EVENT.unpack_from(buf, i)
        name = buf[i + _EVENT.size : i + _EVENT.size + length].rstrip(b"\0")
        i += _EVENT.size + length
        if mask & (IN_CLOSE_WRITE | IN_MOVED_TO) and name:
            out.add(str(directory / os.fsdecode(name)))
    return out
