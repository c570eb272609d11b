"""Staging batches of jobs: grouped by endpoint, retried when a retry can help, a failure pinned on its job;
and the service staging jobs in on the login node, so launchers claim only jobs whose data is in place."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from sluice import transfers
from sluice.api import Workspace
from sluice.config import TransferPolicy
from sluice.service import Service
from sluice.staging import Stager
from sluice.states import S
from sluice.transfers.base import Item, SyncTransfer, TransferError
from test_service import _NeverStarts  # tests/ is on the path (rootdir conftest)


class Flaky(SyncTransfer):
    """A transfer kind of the test's own (registered as flaky://): fails `fails` times, then copies locally."""

    scheme: ClassVar[str] = "flaky"
    fails = 0
    batches: ClassVar[list[int]] = []

    def copy(self, src: str, dest: Path, *, link: bool = False, checksum: str | None = None) -> list[Path]:
        if Flaky.fails > 0:
            Flaky.fails -= 1
            raise TransferError("remote busy", transient=True)
        if "missing" in src:
            raise TransferError(f"no such file: {src}")
        target = dest / Path(src).name if dest.is_dir() else dest
        target.write_text(src)
        return [target]

    def submit(self, batch: Sequence[Item]):  # type: ignore[no-untyped-def]
        Flaky.batches.append(len(batch))
        return super().submit(batch)

    def put(self, src: Path, dest: str) -> list[Path]:
        raise TransferError("read only")


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> type[Flaky]:
    monkeypatch.setitem(transfers.TRANSFERS, "flaky", f"{__name__}:Flaky")
    transfers._loaded.pop(f"{__name__}:Flaky", None)
    Flaky.fails, Flaky.batches = 0, []
    return Flaky


def _jobs(ws: Workspace, n: int, url: str = "flaky://site-a/data/f{i}.dat") -> list[int]:
    ws.add_app("t", "/bin/true")
    return ws.add_jobs([{"name": f"j{i}", "app": "t", "stage_in": [url.format(i=i)]} for i in range(n)])


def test_the_files_of_many_jobs_go_in_one_batch_per_endpoint(sqlite_ws: Workspace, flaky: type[Flaky]) -> None:
    ids = _jobs(sqlite_ws, 6)
    more = sqlite_ws.add_jobs([{"name": "b", "app": "t", "stage_in": ["flaky://site-b/x.dat"]}])
    jobs = sqlite_ws.jobs(ids=ids + more)
    out = Stager(TransferPolicy(backoff_s=0)).stage_in(jobs, lambda j: [])
    assert [o.error for o in out] == [None] * 7
    assert sorted(flaky.batches) == [1, 6]
    assert (jobs[3].path / "f3.dat").read_text() == "flaky://site-a/data/f3.dat"


def test_a_transient_failure_is_retried_with_backoff(sqlite_ws: Workspace, flaky: type[Flaky]) -> None:
    jobs = sqlite_ws.jobs(ids=_jobs(sqlite_ws, 2))
    flaky.fails = 2
    waits: list[float] = []
    out = Stager(TransferPolicy(attempts=3, backoff_s=1.5), sleep=waits.append).stage_in(jobs, lambda j: [])
    assert [o.error for o in out] == [None, None]
    assert waits == [1.5, 3.0]


def test_retries_are_bounded_and_the_reason_kept(sqlite_ws: Workspace, flaky: type[Flaky]) -> None:
    jobs = sqlite_ws.jobs(ids=_jobs(sqlite_ws, 1))
    flaky.fails = 10
    (o,) = Stager(TransferPolicy(attempts=3, backoff_s=0)).stage_in(jobs, lambda j: [])
    assert o.error == "stage-in failed: remote busy"


def test_a_lasting_failure_fails_only_the_job_at_fault(sqlite_ws: Workspace, flaky: type[Flaky]) -> None:
    ids = _jobs(sqlite_ws, 3)
    bad = sqlite_ws.add_jobs([{"name": "bad", "app": "t", "stage_in": ["flaky://site-a/missing.dat"]}])
    out = Stager(TransferPolicy(backoff_s=0)).stage_in(sqlite_ws.jobs(ids=ids + bad), lambda j: [])
    assert [o.error is None for o in out] == [True, True, True, False]
    assert "no such file" in (out[3].error or "")


def test_the_service_stages_in_on_the_login_node(sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = sqlite_ws
    src = tmp_path / "grid"
    src.mkdir()
    for i in range(3):
        (src / f"grid{i}.dat").write_text(f"grid {i}\n")
    object.__setattr__(ws.config, "transfers", dataclasses.replace(ws.config.transfers, where="service"))
    ws.add_app("gen", "/bin/true")
    ws.add_app("pre", "/bin/true", preprocess="true")
    ids = ws.add_jobs([{"name": f"g{i}", "app": "gen", "stage_in": [str(src / f"grid{i}.dat")]} for i in range(3)])
    (pre,) = ws.add_jobs([{"name": "p", "app": "pre", "stage_in": [str(src / "grid0.dat")]}])
    (lost,) = ws.add_jobs([{"name": "lost", "app": "gen", "stage_in": [str(src / "nope.dat")]}])
    p = Service(ws, _NeverStarts(), period=0.5).run_once()
    assert (p.staged, p.stage_failed) == (4, 1)
    for i, jid in enumerate(ids):
        j = ws.job(jid)
        assert j.state == S.PREPROCESSED and j.session_id is None
        assert (j.path / f"grid{i}.dat").read_text() == f"grid {i}\n"
        assert [e.to_state for e in j.history][-2:] == [S.STAGED_IN, S.PREPROCESSED]
    assert ws.job(pre).state == S.STAGED_IN  # its preprocess hook is a launcher's work
    job = ws.job(lost)
    assert job.state == S.FAILED and "stage-in failed" in (job.state_message or "")
    assert ws.sessions(live_only=True) == []
