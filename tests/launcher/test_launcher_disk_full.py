"""A full disk stops a launcher at once, in one line, and loses no job.

On real small tmpfs mounts (root is needed to mount them; the tests skip, saying why, when the mount fails):
the workspace and its SQLite database on a 12 MiB file system that 600 jobs writing 40 KiB each fill up; and a
workspace whose data directory runs out of inodes, so that the launcher's own mkdir/open fail with ENOSPC.
Afterwards a second launcher with room to spare finishes every job, each exactly once.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice import environ
from sluice.api import Workspace
from sluice.errors import DatabaseError, DiskFull
from sluice.launcher.faults import is_full, low_space, reason
from sluice.launcher.launcher import Launcher, Options, Summary
from sluice.launcher.supervise import supervised
from sluice.states import S
from sluice.store import db

N = 600
WRITE_40K = "sh -c 'head -c 40000 /dev/zero > out.bin'"


def mount_tmpfs(where: Path, options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                           text=True, timeout=30)
    except OSError as e:
        pytest.skip(f"cannot mount a tmpfs: {e}")
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}): {r.stderr.strip() or f'exit {r.returncode}'}")
    try:
        yield where
    finally:
        db.dispose_all()  # SQLite files on the mount must be closed before it goes
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True, capture_output=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    yield from mount_tmpfs(tmp_path / "fs", "size=12m")


@pytest.fixture
def few_inodes(sqlite_ws: Workspace) -> Iterator[Workspace]:
    """A workspace whose data directory is a tmpfs of 40 inodes: room for a dozen jobs' directories and files."""
    for _ in mount_tmpfs(sqlite_ws.config.data_dir, "size=4m,nr_inodes=40"):
        yield sqlite_ws


def run(ws: Workspace, timeout: float = 60, **kw: object) -> tuple[Summary, float]:
    """Run a launcher in a thread; (its summary, seconds it took). Fails if it does not return in time."""
    opts: dict[str, object] = {"kill_grace_s": 1.0, "status": False, "heartbeat_s": 1.0}
    opts.update(kw)
    la = Launcher(ws, Options(**opts))  # type: ignore[arg-type]
    out: list[Summary] = []
    t0 = time.monotonic()
    th = threading.Thread(target=lambda: out.append(la.run()), daemon=True)
    th.start()
    th.join(timeout)
    took = time.monotonic() - t0
    if th.is_alive():
        la.stop("test gave up")
        th.join(30)
        pytest.fail(f"the launcher did not return within {timeout} s ({la.summary.line()})")
    assert out, "the launcher raised instead of returning its summary"
    return out[0], took


def finished_once(ws: Workspace) -> Counter[int]:
    return Counter(e.job_id for e in ws.events(to_state=S.JOB_FINISHED))


def test_a_full_disk_stops_the_launcher_at_once_and_every_job_is_recovered(
        small_fs: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    ws = Workspace.create(small_fs / "ws")
    monkeypatch.setenv(environ.WORKSPACE, str(ws.path))
    ws.add_app("write", WRITE_40K)
    ids = ws.add_jobs([{"name": f"j{i}", "app": "write"} for i in range(N)])

    with caplog.at_level(logging.WARNING, logger="sluice.launcher"):
        s, took = run(ws)
    assert took < 60
    assert s.reason.startswith("disk full: "), s.line()
    assert s.fault is not None and s.exit_code == 3
    said = [r.getMessage() for r in caplog.records if "disk full" in r.getMessage()]
    assert said and "\n" not in said[0], said  # said at once, in one line
    assert s.line().count("\n") == 0 and "stopped: disk full: " in s.line()

    # nothing is marked done that did not finish: every JOB_FINISHED job wrote its whole file
    db.dispose_all()
    ws = Workspace.open(ws.path)
    first = {j.id for j in ws.jobs(state=S.JOB_FINISHED)}
    assert 0 < len(first) < N, "the disk never filled up (or nothing ran)"
    for j in ws.jobs(state=S.JOB_FINISHED):
        assert (j.path / "out.bin").stat().st_size == 40000, j.id

    # free the space; the workspace opens, no job is lost, and every job is finished or recoverable
    for p in (ws.path / "data").rglob("out.bin"):
        p.unlink()
    db.dispose_all()
    ws = Workspace.open(ws.path)
    assert ws.count() == N
    jobs = ws.jobs()
    assert sorted(j.id for j in jobs) == sorted(ids)
    for j in jobs:
        assert j.state in (S.JOB_FINISHED, S.RESTART_READY, S.PREPROCESSED, S.RUNNING), (j.id, j.state)
        if j.state == S.RUNNING:  # held by the stopped launcher's session: recovered once it is stale
            assert j.session_id == s.session_id, (j.id, j.session_id)
        assert j.retry_count <= 1, (j.id, ws.history(j.id))  # not burnt in a loop

    # a second launcher with plenty of room finishes them all, each exactly once
    remount(small_fs, "size=256m")
    time.sleep(1.5)  # the first session's last heartbeat is older than stale_after_s
    s2, _ = run(ws, stale_after_s=1.0)
    assert s2.reason == "no more work" and s2.exit_code == 0, s2.line()
    assert ws.count(state=S.JOB_FINISHED) == N, ws.summary()
    once = finished_once(ws)
    assert set(once) == set(ids) and set(once.values()) == {1}
    assert all(j.session_id is None for j in ws.jobs())
    assert all(x["ended_at"] is not None for x in ws.sessions())
    assert not (first - {j.id for j in ws.jobs(state=S.JOB_FINISHED)})


def test_no_room_for_a_jobs_directory_or_files_is_a_full_disk_not_the_jobs_fault(few_inodes: Workspace) -> None:
    """The launcher's own mkdir/open fail with ENOSPC (here: the data directory is out of inodes). The launcher
    stops saying so; no job is failed or retried in a loop; the next launcher, with room, runs them all."""
    ws = few_inodes
    ws.add_app("true", "/bin/true")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "true"} for i in range(60)])
    s, took = run(ws)
    assert took < 60
    assert s.reason.startswith("disk full: ") and "No space left on device" in s.reason, s.line()
    assert s.exit_code == 3
    jobs = ws.jobs()
    assert not [j.id for j in jobs if j.state == S.FAILED]
    assert all(j.retry_count <= 1 for j in jobs), [(j.id, j.retry_count) for j in jobs if j.retry_count > 1]
    assert ws.count(state=S.JOB_FINISHED) < len(ids)
    assert all(j.session_id is None for j in jobs)  # the database was fine: the session let go of them

    remount(ws.config.data_dir, "nr_inodes=10000")
    s2, _ = run(ws)
    assert s2.reason == "no more work", s2.line()
    once = finished_once(ws)
    assert set(once) == set(ids) and set(once.values()) == {1}


def test_disk_full_faults_are_told_from_the_others(tmp_path: Path) -> None:
    full = DiskFull("the disk holding the database is full (database or disk is full)")
    assert is_full(full) and reason(full).startswith("disk full: ")
    assert is_full(OSError(28, "No space left on device")) and is_full(OSError(122, "Disk quota exceeded"))
    assert not is_full(OSError(2, "No such file or directory"))
    gone = DatabaseError("database error: connection refused")
    assert not is_full(gone) and reason(gone) == "database error: connection refused"
    assert low_space(str(tmp_path)) is None  # the test machine's temporary directory has room
    assert low_space(str(tmp_path / "missing")) is None


def test_a_fault_in_the_supervised_launcher_is_one_line_and_exit_3(capfd: pytest.CaptureFixture[str]) -> None:
    def work() -> int:
        raise DiskFull("the disk holding the database is full (database or disk is full)")

    sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)
    old = {sig: signal.getsignal(sig) for sig in sigs}
    try:
        assert supervised(work) == 3
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    err = capfd.readouterr().err
    assert err == "sluice: error: the disk holding the database is full (database or disk is full)\n"
