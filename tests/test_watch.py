"""sluice watch: one job per file once it is written, exactly once across restarts (kill -9 included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sluice.api import Workspace
from sluice.errors import UserError
from sluice.watch import Watch, Watcher


def _wait(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture
def shots(sqlite_ws: Workspace, tmp_path: Path) -> Path:
    sqlite_ws.add_app("ana", "analyse --in {input}")
    d = tmp_path / "shots"
    d.mkdir()
    return d


def test_a_file_gets_its_job_when_its_writer_closes_it(sqlite_ws: Workspace, shots: Path) -> None:
    w = Watcher(sqlite_ws, Watch(shots, "ana", "*", params={"input": "{path}"}, deadline_min=14, settle_s=60))
    stop = threading.Event()
    t = threading.Thread(target=w.run, kwargs={"until": stop.is_set}, daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        with open(shots / "shot_1.h5", "w") as f:
            f.write("half")
            f.flush()
            time.sleep(0.5)
            assert sqlite_ws.count() == 0  # still being written: no job yet
            f.write(" and the rest")
        t0 = time.monotonic()
        _wait(lambda: sqlite_ws.count() == 1)
        assert time.monotonic() - t0 < 10  # heard from the kernel, not after the 60 s settle time
        (shots / ".shot_2.h5.part").write_text("x")  # hidden: an atomic writer's temporary name gets no job
        os.rename(shots / ".shot_2.h5.part", shots / "shot_2.h5")
        _wait(lambda: sqlite_ws.count() == 2)
    finally:
        stop.set()
        t.join(5)
    jobs = {j.name: j for j in sqlite_ws.jobs()}
    assert set(jobs) == {"shot_1.h5", "shot_2.h5"}
    j = jobs["shot_1.h5"]
    assert j.params == {"input": str(shots.resolve() / "shot_1.h5")} and j.workflow == "watch"
    assert j.deadline is not None and 13 * 60 < j.deadline - j.created_at <= 14 * 60 + 1


def test_files_already_there_count_once_settled(sqlite_ws: Workspace, shots: Path) -> None:
    (shots / "old.h5").write_text("old")
    now = [1000.0]
    w = Watcher(sqlite_ws, Watch(shots, "ana", params={"input": "{name}"}, settle_s=2), clock=lambda: now[0])
    assert w.scan() == []
    now[0] += 1
    assert w.scan() == []
    now[0] += 1.5
    assert len(w.scan()) == 1 and sqlite_ws.jobs()[0].params == {"input": "old.h5"}
    assert w.scan() == []


def test_exactly_once_across_a_kill_9(sqlite_ws: Workspace, shots: Path) -> None:
    env = {**os.environ, "SLUICE_WORKSPACE": str(sqlite_ws.path)}
    cmd = [sys.executable, "-m", "sluice", "watch", str(shots), "--app", "ana", "--param", "input={path}",
           "--settle", "0.2"]
    for i in range(5):
        (shots / f"s{i}.h5").write_text(str(i))
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: sqlite_ws.count() == 5, 30)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        for i in range(5, 8):
            (shots / f"s{i}.h5").write_text(str(i))
        p = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        _wait(lambda: sqlite_ws.count() == 8, 30)
        time.sleep(1.0)  # a second look at the old files adds nothing
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
    assert sorted(j.name for j in sqlite_ws.jobs()) == sorted(f"s{i}.h5" for i in range(8))


def test_bad_input_is_one_line(sqlite_ws: Workspace, shots: Path) -> None:
    with pytest.raises(UserError, match="unknown app"):
        Watcher(sqlite_ws, Watch(shots, "nope"))
    with pytest.raises(UserError, match="not a directory"):
        Watcher(sqlite_ws, Watch(shots / "missing", "ana"))
    with pytest.raises(UserError, match="only {path}, {name} and {stem}"):
        Watcher(sqlite_ws, Watch(shots, "ana", params={"input": "{size}"}))
