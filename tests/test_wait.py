"""Workspace.wait and Workspace.as_completed: they return when the jobs end, in the order they end, and time out."""

from __future__ import annotations

import threading
import time

import pytest

from sluice.api import Workspace
from sluice.api.progress import Snapshot, WaitTimeout
from sluice.errors import UserError
from sluice.states import S

RUN = (S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED)


def finish(ws: Workspace, jid: int) -> None:
    for st in RUN:
        ws.set_state(jid, st, by_launcher=True)


def fail(ws: Workspace, jid: int) -> None:
    ws.set_state(jid, S.RUNNING, by_launcher=True)
    ws.set_state(jid, S.RUN_ERROR, "exit code 2", by_launcher=True)
    ws.set_state(jid, S.FAILED)


def later(delay: float, *steps: tuple[object, ...]) -> threading.Thread:
    """Run each (fn, *args) after `delay` seconds more, in a thread (another process would, in real life)."""
    def go() -> None:
        for fn, *args in steps:
            time.sleep(delay)
            fn(*args)  # type: ignore[operator]

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


@pytest.fixture
def three(ws: Workspace) -> list[int]:
    ws.add_app("a", "/bin/true")
    return ws.add_jobs([{"name": f"j{i}", "app": "a", "workflow": "w", "max_retries": 0} for i in range(3)])


def test_wait_returns_the_final_counts_when_every_job_ended(ws: Workspace, three: list[int]) -> None:
    ws.add_jobs([{"name": "other", "app": "a", "workflow": "x"}])  # not selected: never ends
    t = later(0.2, (finish, ws, three[0]), (fail, ws, three[1]), (ws.kill, three[2]))
    t0 = time.monotonic()
    counts = ws.wait(workflow="w", poll=0.05, timeout=30)
    assert counts == {"JOB_FINISHED": 1, "FAILED": 1, "USER_KILLED": 1}
    assert 0.5 < time.monotonic() - t0 < 10
    t.join()


def test_wait_times_out_with_the_counts(ws: Workspace, three: list[int]) -> None:
    finish(ws, three[0])
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout) as e:
        ws.wait(workflow="w", timeout=0.3, poll=0.05)
    assert 0.3 <= time.monotonic() - t0 < 5
    assert e.value.counts == {"PREPROCESSED": 2, "JOB_FINISHED": 1}
    assert isinstance(e.value, TimeoutError) and str(e.value) == "2 of 3 job(s) not done after 0.3 s"


def test_a_state_filter_picks_the_jobs_once(ws: Workspace, three: list[int]) -> None:
    """Waiting for the RUNNING jobs means the jobs running now, until they end (they leave RUNNING as they do)."""
    ws.set_state(three[0], S.RUNNING, by_launcher=True)
    t = later(0.2, (finish_from_running, ws, three[0]))
    assert ws.wait(state="RUNNING", poll=0.05, timeout=30) == {"JOB_FINISHED": 1}
    t.join()
    assert ws.wait(ids=three[:1]) == {"JOB_FINISHED": 1}
    assert ws.wait(workflow="nothing-here") == {}


def finish_from_running(ws: Workspace, jid: int) -> None:
    for st in RUN[1:]:
        ws.set_state(jid, st, by_launcher=True)


def test_snapshots_follow_the_campaign(ws: Workspace, three: list[int]) -> None:
    t = later(0.15, (finish, ws, three[0]), (finish, ws, three[1]), (finish, ws, three[2]))
    snaps: list[Snapshot] = list(ws.snapshots(poll=0.05, timeout=30, workflow="w"))
    t.join()
    assert snaps[0].done < 3 and snaps[-1].counts == {"JOB_FINISHED": 3} and snaps[-1].all_done
    assert [s.done for s in snaps] == sorted(s.done for s in snaps)
    assert all(a.elapsed <= b.elapsed for a, b in zip(snaps, snaps[1:], strict=False))


def test_as_completed_yields_each_job_as_it_ends(ws: Workspace, three: list[int]) -> None:
    finish(ws, three[2])  # already ended: comes first
    t = later(0.2, (fail, ws, three[1]), (finish, ws, three[0]))
    got = [(j.id, j.state) for j in ws.as_completed(three, timeout=30, poll=0.05)]
    t.join()
    assert got == [(three[2], "JOB_FINISHED"), (three[1], "FAILED"), (three[0], "JOB_FINISHED")]


def test_jobs_that_end_between_two_polls_come_in_the_order_they_ended(ws: Workspace, three: list[int]) -> None:
    """A slow poll (a loaded database) sees several ends at once: they still come in the order they happened."""
    finish(ws, three[2])
    fail(ws, three[0])
    finish(ws, three[1])
    got = [(j.id, j.state) for j in ws.as_completed(three, timeout=30, poll=0.05)]
    assert got == [(three[2], "JOB_FINISHED"), (three[0], "FAILED"), (three[1], "JOB_FINISHED")]


def test_as_completed_times_out_and_knows_removed_jobs(ws: Workspace, three: list[int]) -> None:
    finish(ws, three[0])
    it = ws.as_completed([ws.job(three[0]), three[1]], timeout=0.2, poll=0.05)
    assert next(it).id == three[0]
    with pytest.raises(TimeoutError, match="1 of 2 job"):
        next(it)
    ws.remove([three[2]])
    with pytest.raises(UserError, match=f"job {three[2]} was removed"):
        list(ws.as_completed([three[2]]))


def test_as_completed_reads_many_ids_in_chunks(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.add_app("a", "/bin/true")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a"} for i in range(2000)])
    ws.kill(ids[0])
    with ws.write() as conn:  # the other 1,999 end together, as a launcher's batch would
        conn.exec_driver_sql("UPDATE jobs SET state = 'JOB_FINISHED', updated_at = "
                             "(SELECT MAX(updated_at) FROM jobs) + 1 WHERE state != 'USER_KILLED'")
    got = list(ws.as_completed(ids))
    assert [j.id for j in got] == ids and {j.state for j in got[1:]} == {"JOB_FINISHED"}
    assert ws.wait(ids=ids) == {"JOB_FINISHED": 1999, "USER_KILLED": 1}
