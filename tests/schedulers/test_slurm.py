"""Slurm, for real: a 4-node cluster started by scripts/slurm-cluster.sh (no mocks)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sluice.schedulers import BatchRequest, BatchState, BatchStatus, SchedulerError, get_scheduler
from sluice.schedulers.slurm import SlurmScheduler

from .conftest import recorded

pytestmark = pytest.mark.slurm


@pytest.fixture
def slurm(slurm_cluster: None) -> SlurmScheduler:
    s = get_scheduler("slurm")
    assert isinstance(s, SlurmScheduler)
    s.check()
    return s


def _wait(
    s: SlurmScheduler, jid: str, done: Callable[[BatchStatus], bool], timeout: float = 20
) -> BatchStatus:
    end = time.monotonic() + timeout
    while True:
        st = s.status([jid])[jid]
        if done(st) or time.monotonic() > end:
            return st
        time.sleep(0.2)


def _sh(script: str) -> list[str]:
    return ["bash", "-c", script]


def test_two_node_job_runs_and_finishes(slurm: SlurmScheduler, tmp_path: Path) -> None:
    out = tmp_path / "seen.txt"
    req = BatchRequest(
        command=_sh(f'echo "$SLURM_JOB_NODELIST $SLURM_NNODES $SLUICE_BATCH_JOB $GREETING" > {out}; sleep 1'),
        num_nodes=2, wall_time_min=2, workdir=tmp_path / "batch", job_name="sluice test",
        env={"GREETING": "hello world"},
    )
    jid = slurm.submit(req)
    assert jid.isdigit()
    seen = {_wait(slurm, jid, lambda s: s.state is not BatchState.QUEUED).state}
    st = _wait(slurm, jid, lambda s: s.state.is_terminal)
    assert seen <= {BatchState.RUNNING, BatchState.FINISHED}
    assert (st.state, st.exit_code) == (BatchState.FINISHED, 0)
    nodelist, nnodes, batch_job, greeting = out.read_text().split(" ", 3)
    assert nodelist.startswith("n") and nnodes == "2"
    assert batch_job == f"slurm:{jid}"
    assert greeting == "hello world\n"
    assert len(list((tmp_path / "batch").glob(f"sluice_test-*-{jid}.out"))) == 1


def test_failing_job_reports_its_exit_code(slurm: SlurmScheduler, tmp_path: Path) -> None:
    jid = slurm.submit(BatchRequest(_sh("exit 3"), 1, 1, tmp_path))
    st = _wait(slurm, jid, lambda s: s.state.is_terminal)
    assert (st.state, st.exit_code) == (BatchState.FAILED, 3)
    assert "NonZeroExitCode" in st.message


def test_bad_partition_is_one_line_with_sbatchs_text(slurm: SlurmScheduler, tmp_path: Path) -> None:
    with pytest.raises(SchedulerError) as exc:
        slurm.submit(BatchRequest(["true"], 1, 1, tmp_path, queue="no-such-partition"))
    assert "invalid partition" in str(exc.value).lower()
    assert "\n" not in str(exc.value)


def test_cancel_running_job(slurm: SlurmScheduler, tmp_path: Path) -> None:
    jid = slurm.submit(BatchRequest(["sleep", "60"], 1, 2, tmp_path))
    _wait(slurm, jid, lambda s: s.state is not BatchState.QUEUED, timeout=10)
    slurm.cancel(jid)
    st = _wait(slurm, jid, lambda s: s.state.is_terminal)
    assert st.state is BatchState.CANCELLED
    slurm.cancel(jid)  # already cancelled: fine


def test_cancel_queued_job(slurm: SlurmScheduler, tmp_path: Path) -> None:
    # --hold keeps it queued however idle the cluster is.
    jid = slurm.submit(BatchRequest(["sleep", "60"], 1, 2, tmp_path, extra=["--hold"]))
    assert slurm.status([jid])[jid].state is BatchState.QUEUED
    slurm.cancel(jid)
    assert _wait(slurm, jid, lambda s: s.state.is_terminal).state is BatchState.CANCELLED


def test_unknown_ids_are_terminal_without_error(slurm: SlurmScheduler) -> None:
    for ids in (["99999999"], ["99999998", "99999999"], ["not-an-id"]):
        got = slurm.status(ids)
        assert {i: got[i].state for i in ids} == {i: BatchState.FINISHED for i in ids}
    slurm.cancel("99999999")


def test_script_text(tmp_path: Path) -> None:
    req = BatchRequest(["python", "-m", "sluice", "launcher", "--workspace", "/my ws"], 3, 90, tmp_path,
                       queue="debug", project="proj", extra=["--qos=debug"], env={"A": "x y"})
    d = SlurmScheduler._directives(req, tmp_path / "sluice-abc")
    assert d == [
        "#SBATCH --job-name=sluice", "#SBATCH --nodes=3", "#SBATCH --time=90", f"#SBATCH --chdir={tmp_path}",
        f"#SBATCH --output={tmp_path}/sluice-abc-%j.out", f"#SBATCH --error={tmp_path}/sluice-abc-%j.err",
        "#SBATCH --partition=debug", "#SBATCH --account=proj", "#SBATCH --qos=debug",
    ]


# Parsers against outputs recorded from this Slurm 22.05 (tests/schedulers/data/slurm-*.txt).

def test_parse_scontrol_timeout() -> None:
    st = SlurmScheduler()._parse_scontrol("2", recorded("slurm-scontrol-timeout.txt"))
    assert st is not None and (st.state, st.exit_code) == (BatchState.TIMEOUT, -15)


def test_parse_scontrol_cancelled() -> None:
    st = SlurmScheduler()._parse_scontrol("3", recorded("slurm-scontrol-cancelled.txt"))
    assert st == BatchStatus("3", BatchState.CANCELLED, "CANCELLED", -15)


def test_unrecognized_state_is_unknown_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    got = SlurmScheduler()._parse_squeue("7 WEIRD_NEW_STATE None\n8 PENDING Priority\n")
    assert got["7"].state is BatchState.UNKNOWN
    assert got["8"] == BatchStatus("8", BatchState.QUEUED, "Priority")
    assert "WEIRD_NEW_STATE" in caplog.text
