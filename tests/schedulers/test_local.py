"""The local scheduler runs real processes: wall time, exit codes, cancel and unknown ids."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sluice.errors import Fault, UserError
from sluice.schedulers import BadBatchRequest, BatchRequest, BatchState, BatchStatus, get_scheduler
from sluice.schedulers.local import LocalScheduler


@pytest.fixture
def sched(tmp_path: Path) -> LocalScheduler:
    # One "minute" of wall time lasts 1 s here, and a cancelled or timed-out job gets 1 s of grace.
    s = get_scheduler("local", seconds_per_minute=1.0, grace_s=1.0, state_dir=tmp_path / "state")
    assert isinstance(s, LocalScheduler)
    return s


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _req(tmp_path: Path, command: list[str], minutes: int = 30, **kw: object) -> BatchRequest:
    return BatchRequest(command=command, num_nodes=1, wall_time_min=minutes, workdir=tmp_path / "wd", **kw)  # type: ignore[arg-type]


def _wait(
    sched: LocalScheduler, jid: str, done: Callable[[BatchStatus], bool], timeout: float = 15
) -> BatchStatus:
    end = time.monotonic() + timeout
    while True:
        st = sched.status([jid])[jid]
        if done(st) or time.monotonic() > end:
            return st
        time.sleep(0.05)


def test_success_reports_running_then_finished_with_env(sched: LocalScheduler, tmp_path: Path) -> None:
    out = tmp_path / "env.txt"
    code = (
        "import os, sys, time; time.sleep(0.5);"
        f"open({str(out)!r}, 'w').write('|'.join([os.environ['SLUICE_BATCH_JOB'], "
        "os.environ['SLUICE_ALLOCATION_END'], os.environ['MY_VAR'], os.getcwd()]))"
    )
    before = time.time()
    jid = sched.submit(_req(tmp_path, _py(code), minutes=30, env={"MY_VAR": "a b"}))
    first = sched.status([jid])[jid]
    assert first.state in (BatchState.QUEUED, BatchState.RUNNING)
    assert _wait(sched, jid, lambda s: s.state is BatchState.RUNNING).state is BatchState.RUNNING
    st = _wait(sched, jid, lambda s: s.state.is_terminal)
    assert st == BatchStatus(jid, BatchState.FINISHED, "exit code 0", 0)
    batch_job, end, var, cwd = out.read_text().split("|")
    assert batch_job == f"local:{jid}"
    assert before + 29 <= int(end) <= time.time() + 31
    assert (var, cwd) == ("a b", str(tmp_path / "wd"))


def test_failure_reports_exit_code_and_keeps_output(sched: LocalScheduler, tmp_path: Path) -> None:
    jid = sched.submit(_req(tmp_path, _py("import sys; print('oops'); sys.exit(3)")))
    st = _wait(sched, jid, lambda s: s.state.is_terminal)
    assert (st.state, st.exit_code) == (BatchState.FAILED, 3)
    outs = list((tmp_path / "wd").glob("sluice-*.out"))
    assert [p.read_text() for p in outs] == ["oops\n"]


def test_wall_time_is_enforced_with_term_then_kill(sched: LocalScheduler, tmp_path: Path) -> None:
    # The command ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    t0 = time.monotonic()
    jid = sched.submit(_req(tmp_path, _py(code), minutes=1))
    st = _wait(sched, jid, lambda s: s.state.is_terminal)
    assert st.state is BatchState.TIMEOUT
    assert st.exit_code == -9
    assert 1.9 <= time.monotonic() - t0 < 6


def test_cancel_running_then_cancel_again(sched: LocalScheduler, tmp_path: Path) -> None:
    jid = sched.submit(_req(tmp_path, _py("import time; time.sleep(60)")))
    _wait(sched, jid, lambda s: s.state is BatchState.RUNNING)
    sched.cancel(jid)
    st = _wait(sched, jid, lambda s: s.state.is_terminal)
    assert (st.state, st.exit_code) == (BatchState.CANCELLED, -15)
    sched.cancel(jid)  # already ended: not an error
    assert sched.status([jid])[jid].state is BatchState.CANCELLED


def test_cancel_right_after_submit(sched: LocalScheduler, tmp_path: Path) -> None:
    jid = sched.submit(_req(tmp_path, _py("import time; time.sleep(60)")))
    sched.cancel(jid)
    assert _wait(sched, jid, lambda s: s.state.is_terminal).state is BatchState.CANCELLED


def test_unknown_and_dead_ids_are_terminal(sched: LocalScheduler) -> None:
    ids = ["999999999:1", "garbage", f"{os.getpid()}:1"]  # the last: our own pid, but another start time
    got = sched.status(ids)
    assert {i: got[i].state for i in ids} == {i: BatchState.FINISHED for i in ids}
    sched.cancel("999999999:1")


def test_a_restarted_scheduler_finds_earlier_jobs(sched: LocalScheduler, tmp_path: Path) -> None:
    jid = sched.submit(_req(tmp_path, _py("import sys; sys.exit(4)")))
    _wait(sched, jid, lambda s: s.state.is_terminal)
    again = LocalScheduler(state_dir=tmp_path / "state")
    assert again.status([jid])[jid].exit_code == 4


def test_missing_command_binary_fails_with_127(sched: LocalScheduler, tmp_path: Path) -> None:
    jid = sched.submit(_req(tmp_path, ["/nonexistent/launcher"]))
    st = _wait(sched, jid, lambda s: s.state.is_terminal)
    assert (st.state, st.exit_code) == (BatchState.FAILED, 127)
    assert "/nonexistent/launcher" in st.message


@pytest.mark.parametrize(
    ("kw", "text"),
    [({"num_nodes": 0}, "at least 1 node"), ({"wall_time_min": 0}, "at least 1 minute"),
     ({"command": []}, "empty command")],
)
def test_bad_requests_are_one_line_errors(sched: LocalScheduler, tmp_path: Path, kw: dict[str, object],
                                          text: str) -> None:
    base: dict[str, object] = {"command": ["true"], "num_nodes": 1, "wall_time_min": 1, "workdir": tmp_path}
    with pytest.raises(BadBatchRequest, match=text) as exc:  # the user's mistake, not a scheduler fault
        sched.submit(BatchRequest(**{**base, **kw}))  # type: ignore[arg-type]
    assert isinstance(exc.value, UserError) and not isinstance(exc.value, Fault)


def test_unknown_scheduler_name_lists_valid_ones() -> None:
    valid = "local, slurm, pbs, cobalt, lsf"
    with pytest.raises(UserError, match=f"unknown scheduler 'sge'; valid names: {valid}"):
        get_scheduler("sge")
