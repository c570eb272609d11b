"""PBS, Cobalt and LSF cannot run here: their script builders, argv and parsers are checked against
outputs recorded from their documentation (tests/schedulers/data), through the one `_run` seam."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from sluice.errors import Fault, UserError
from sluice.schedulers import (
    BadBatchRequest,
    BatchRequest,
    BatchState,
    BatchStatus,
    SchedulerError,
    SchedulerUnavailable,
)
from sluice.schedulers import get_scheduler as get
from sluice.schedulers.base import BatchScheduler, _Result

from .conftest import FakeCommands, recorded

COMMANDS = {
    "pbs": ("qsub", "qstat", "qdel"),
    "cobalt": ("qsub", "qstat", "qdel"),
    "lsf": ("bsub", "bjobs", "bkill"),
    "slurm": ("sbatch", "squeue", "scontrol", "scancel"),
}


class Replay:
    """Answers commands with recorded outputs, in order, and keeps every argv (and stdin) it was given."""

    def __init__(self, *answers: _Result) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv: Sequence[str], stdin: str | None = None) -> _Result:
        self.calls.append((list(argv), stdin))
        return self.answers.pop(0)


def _ok(out: str) -> _Result:
    return _Result(0, out, "")


def _sched(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *answers: _Result
) -> tuple[BatchScheduler, Replay]:
    """The named scheduler with its commands on PATH (never run) and `_run` replaying ``answers``."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for cmd in COMMANDS[name]:
        (bindir / cmd).write_text("#!/bin/sh\nexit 99\n")
        (bindir / cmd).chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    s = get(name)
    assert isinstance(s, BatchScheduler)
    replay = Replay(*answers)
    monkeypatch.setattr(s, "_run", replay)
    return s, replay


def _req(tmp_path: Path, **kw: object) -> BatchRequest:
    base: dict[str, object] = {
        "command": [
            "/usr/bin/python3",
            "-m",
            "sluice",
            "launcher",
            "--workspace",
            "/my ws",
            "--job-mode",
            "serial",
        ],
        "num_nodes": 4,
        "wall_time_min": 90,
        "workdir": tmp_path / "wd",
        "queue": "debug",
        "project": "CSC249",
        "env": {"OMP_NUM_THREADS": "2"},
    }
    return BatchRequest(**{**base, **kw})  # type: ignore[arg-type]


# ---------------------------------------------------------------- missing commands


@pytest.mark.parametrize(
    ("name", "label", "cmd"),
    [
        ("pbs", "PBS", "qsub"),
        ("cobalt", "Cobalt", "qsub"),
        ("lsf", "LSF", "bsub"),
        ("slurm", "Slurm", "sbatch"),
    ],
)
def test_missing_command_is_unavailable_and_named(
    name: str, label: str, cmd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    s = get(name)
    assert not s.available()
    with pytest.raises(
        SchedulerUnavailable, match=f"^{label}: {cmd} not found on PATH; is this a {label} machine"
    ):
        s.submit(_req(tmp_path))
    assert not (tmp_path / "wd").exists()


# ---------------------------------------------------------------- PBS


def test_pbs_submit_script_and_argv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, replay = _sched("pbs", monkeypatch, tmp_path, _ok("1234.pbs01.example.org\n"))
    assert s.submit(_req(tmp_path, extra=["-l filesystems=home:eagle"])) == "1234.pbs01.example.org"
    ((argv, _),) = replay.calls
    script = Path(argv[1])
    assert argv == ["qsub", str(script)] and script.parent == tmp_path / "wd"
    stem = script.with_suffix("")
    assert script.read_text() == (
        "#!/bin/bash\n#PBS -N sluice\n#PBS -l select=4\n#PBS -l place=scatter:excl\n"
        f"#PBS -l walltime=01:30:00\n#PBS -o {stem}.out\n#PBS -e {stem}.err\n#PBS -q debug\n#PBS -A CSC249\n"
        "#PBS -l filesystems=home:eagle\n"
        f'\ncd {tmp_path}/wd\nexport OMP_NUM_THREADS=2\nexport SLUICE_BATCH_JOB="pbs:${{PBS_JOBID}}"\n'
        "exec /usr/bin/python3 -m sluice launcher --workspace '/my ws' --job-mode serial\n"
    )


def test_pbs_submit_refused_carries_qsubs_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = _sched("pbs", monkeypatch, tmp_path, _Result(168, "", "qsub: Unknown queue\n"))
    with pytest.raises(SchedulerError, match=r"^PBS: qsub failed: qsub: Unknown queue$"):
        s.submit(_req(tmp_path))


def test_pbs_status_from_recorded_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 9999.vbox is unknown: qstat says so on stderr, exits 153, and still prints the others.
    answer = _Result(153, recorded("pbs-qstat-f-json.txt"), "qstat: Unknown Job Id 9999.vbox\n")
    s, replay = _sched("pbs", monkeypatch, tmp_path, answer)
    ids = [
        "1.vbox",
        "2.vbox",
        "3.vbox",
        "4.vbox",
        "5.vbox",
        "6.vbox",
        "7.vbox",
        "9999.vbox",
        "3.vbox.example.org",
    ]
    got = s.status(ids)
    assert replay.calls[0][0] == ["qstat", "-f", "-F", "json", "-x", *ids]
    assert {i: (got[i].state, got[i].exit_code) for i in ids} == {
        "1.vbox": (BatchState.QUEUED, None),
        "2.vbox": (BatchState.RUNNING, None),
        "3.vbox": (BatchState.FINISHED, 0),
        "4.vbox": (BatchState.FAILED, 3),
        "5.vbox": (BatchState.TIMEOUT, -29),
        "6.vbox": (BatchState.CANCELLED, -9),
        "7.vbox": (BatchState.UNKNOWN, None),  # a state letter we have no entry for
        "9999.vbox": (BatchState.FINISHED, None),
        "3.vbox.example.org": (BatchState.FINISHED, 0),  # matched on the sequence number
    }
    assert got["1.vbox"].message == "Not Running: No available resources on nodes"


def test_pbs_status_server_down_is_unknown_not_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    err = "Connection refused\nqstat: cannot connect to server pbs01 (errno=15010)\n"
    s, _ = _sched("pbs", monkeypatch, tmp_path, _Result(2, "", err))
    st = s.status(["1.pbs01"])["1.pbs01"]
    assert st.state is BatchState.UNKNOWN and "cannot connect to server" in st.message


@pytest.mark.parametrize(
    ("rc", "err", "ok"),
    [
        (35, "qdel: Job has finished 1.vbox", True),
        (153, "qdel: Unknown Job Id 1.vbox", True),
        (159, "qdel: Unauthorized Request  1.vbox", False),
    ],
)
def test_pbs_cancel(rc: int, err: str, ok: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, replay = _sched("pbs", monkeypatch, tmp_path, _Result(rc, "", err + "\n"))
    if ok:
        s.cancel("1.vbox")
    else:
        with pytest.raises(SchedulerError, match="Unauthorized Request"):
            s.cancel("1.vbox")
    assert replay.calls[0][0] == ["qdel", "1.vbox"]


# ---------------------------------------------------------------- Cobalt


def test_cobalt_submit_argv_and_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, replay = _sched("cobalt", monkeypatch, tmp_path, _ok("330117\n"))
    assert s.submit(_req(tmp_path, extra=["--attrs", "mcdram=cache:numa=quad"])) == "330117"
    ((argv, _),) = replay.calls
    script = Path(argv[-1])
    assert argv == [
        "qsub",
        "-n",
        "4",
        "-t",
        "90",
        "--mode",
        "script",
        "--jobname",
        "sluice",
        "--cwd",
        str(tmp_path / "wd"),
        "-O",
        str(script.with_suffix("")),
        "-q",
        "debug",
        "-A",
        "CSC249",
        "--attrs",
        "mcdram=cache:numa=quad",
        str(script),
    ]
    text = script.read_text()
    assert (
        text.startswith("#!/bin/bash\n\ncd ") and 'export SLUICE_BATCH_JOB="cobalt:${COBALT_JOBID}"' in text
    )
    assert os.access(script, os.X_OK)  # Cobalt's script mode runs the file itself


def test_cobalt_status_from_recorded_qstat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, replay = _sched("cobalt", monkeypatch, tmp_path, _ok(recorded("cobalt-qstat.txt")))
    ids = ["330117", "330118", "330119", "330120", "330121", "330000", "junk"]
    got = s.status(ids)
    assert replay.calls[0][0] == ["qstat", "--header", "JobId:State", *ids[:-1]]
    assert {i: got[i].state for i in ids} == {
        "330117": BatchState.QUEUED,
        "330118": BatchState.RUNNING,
        "330119": BatchState.QUEUED,
        "330120": BatchState.RUNNING,
        "330121": BatchState.UNKNOWN,
        "330000": BatchState.FINISHED,
        "junk": BatchState.FINISHED,
    }


def test_cobalt_status_none_known(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = _sched("cobalt", monkeypatch, tmp_path, _Result(1, "", ""))  # Cobalt: exit 1, silent
    assert s.status(["1", "2"]) == {
        i: BatchStatus(i, BatchState.FINISHED, "no longer known to Cobalt") for i in ("1", "2")
    }


# ---------------------------------------------------------------- LSF


def test_lsf_submit_pipes_script_with_directives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = "Job <4567> is submitted to queue <batch>.\n"
    s, replay = _sched("lsf", monkeypatch, tmp_path, _ok(out))
    assert s.submit(_req(tmp_path, extra=["-alloc_flags smt4"])) == "4567"
    ((argv, stdin),) = replay.calls
    assert argv == ["bsub"]
    assert stdin is not None
    (script,) = (tmp_path / "wd").glob("sluice-*.sh")
    stem = script.with_suffix("")
    assert stdin == script.read_text()
    assert stdin.splitlines()[:10] == [
        "#!/bin/bash",
        "#BSUB -J sluice",
        "#BSUB -nnodes 4",
        "#BSUB -W 90",
        f"#BSUB -cwd {tmp_path}/wd",
        f"#BSUB -o {stem}.%J.out",
        f"#BSUB -e {stem}.%J.err",
        "#BSUB -q debug",
        "#BSUB -P CSC249",
        "#BSUB -alloc_flags smt4",
    ]
    assert 'export SLUICE_BATCH_JOB="lsf:${LSB_JOBID}"' in stdin


def test_lsf_status_from_recorded_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, replay = _sched("lsf", monkeypatch, tmp_path, _Result(255, recorded("lsf-bjobs-json.txt"), ""))
    ids = ["101", "102", "103", "104", "105", "106", "123"]
    got = s.status(ids)
    assert replay.calls[0][0] == ["bjobs", "-a", "-json", "-o", "jobid stat exit_code exit_reason", *ids]
    assert {i: (got[i].state, got[i].exit_code) for i in ids} == {
        "101": (BatchState.QUEUED, None),
        "102": (BatchState.RUNNING, None),
        "103": (BatchState.FINISHED, 0),
        "104": (BatchState.FAILED, 3),
        "105": (BatchState.TIMEOUT, 140),
        "106": (BatchState.CANCELLED, 130),
        "123": (BatchState.FINISHED, None),
    }
    assert got["123"].message == "Job <123> is not found"


def test_lsf_status_garbage_is_unknown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = _sched("lsf", monkeypatch, tmp_path, _Result(255, "", "LSF is down; try later\n"))
    assert s.status(["1"])["1"] == BatchStatus(
        "1", BatchState.UNKNOWN, "bjobs failed: LSF is down; try later"
    )


def test_lsf_cancel_finished_job_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, _ = _sched("lsf", monkeypatch, tmp_path, _Result(255, "", "Job <4567>: Job has already finished\n"))
    s.cancel("4567")


# ---------------------------------------------------------------- the template's table, end to end
# Real subprocesses against fake commands (tests/schedulers/data/fake-command.sh): the exact argv and script
# each scheduler's table produces for one request, and the native id it reads from the command's answer.

_BODY = (
    "\n\ncd {wd}\nexport OMP_NUM_THREADS=2\nexport SLUICE_BATCH_JOB=\"{var}\"\n"
    "exec /usr/bin/python3 -m sluice launcher --workspace '/my ws' --job-mode serial\n"
)
SUBMITS = {
    # name: (submit command, its answer, native id, extra, argv after the command, the script's header)
    "slurm": ("sbatch", "4242;cluster1\n", "4242", ["--qos=debug"], ["--parsable", "{script}"], [
        "#SBATCH --job-name=my_job", "#SBATCH --nodes=4", "#SBATCH --time=90", "#SBATCH --chdir={wd}",
        "#SBATCH --output={stem}-%j.out", "#SBATCH --error={stem}-%j.err", "#SBATCH --partition=debug",
        "#SBATCH --account=CSC249", "#SBATCH --qos=debug"]),
    "pbs": ("qsub", "77.pbs01\n", "77.pbs01", ["-l filesystems=home"], ["{script}"], [
        "#PBS -N my_job", "#PBS -l select=4", "#PBS -l place=scatter:excl", "#PBS -l walltime=01:30:00",
        "#PBS -o {stem}.out", "#PBS -e {stem}.err", "#PBS -q debug", "#PBS -A CSC249",
        "#PBS -l filesystems=home"]),
    "lsf": ("bsub", "Job <4567> is submitted to queue <batch>.\n", "4567", ["-alloc_flags smt4"], [], [
        "#BSUB -J my_job", "#BSUB -nnodes 4", "#BSUB -W 90", "#BSUB -cwd {wd}", "#BSUB -o {stem}.%J.out",
        "#BSUB -e {stem}.%J.err", "#BSUB -q debug", "#BSUB -P CSC249", "#BSUB -alloc_flags smt4"]),
    "cobalt": ("qsub", "Job routed to queue \"debug\".\n330117\n", "330117", ["--attrs", "mcdram=cache"], [
        "-n", "4", "-t", "90", "--mode", "script", "--jobname", "my_job", "--cwd", "{wd}", "-O", "{stem}",
        "-q", "debug", "-A", "CSC249", "--attrs", "mcdram=cache", "{script}"], []),
}
VARS = {"slurm": "slurm:${SLURM_JOB_ID}", "pbs": "pbs:${PBS_JOBID}", "lsf": "lsf:${LSB_JOBID}",
        "cobalt": "cobalt:${COBALT_JOBID}"}


@pytest.mark.parametrize("name", sorted(SUBMITS))
def test_submit_writes_the_exact_script_and_argv(name: str, tmp_path: Path, fake_commands: FakeCommands) -> None:
    cmd, answer, native_id, extra, argv, header = SUBMITS[name]
    fake_commands.install(*COMMANDS[name])
    fake_commands.answer(cmd, stdout=answer, reads_stdin=name == "lsf")
    assert get(name).submit(_req(tmp_path, job_name="my job", extra=extra)) == native_id
    (script,) = (tmp_path / "wd").glob("my_job-*.sh")
    fill = {"wd": str(tmp_path / "wd"), "stem": str(script.with_suffix("")), "script": str(script),
            "var": VARS[name]}
    assert fake_commands.argv(cmd) == [a.format(**fill) for a in argv]
    expected = "\n".join(["#!/bin/bash", *(h.format(**fill) for h in header)]) + _BODY.format(**fill)
    assert script.read_text() == expected
    assert os.access(script, os.X_OK)
    if name == "lsf":
        assert fake_commands.stdin(cmd) == expected


@pytest.mark.parametrize("name", sorted(SUBMITS))
def test_submit_without_a_job_id_in_the_answer(name: str, tmp_path: Path, fake_commands: FakeCommands) -> None:
    cmd = SUBMITS[name][0]
    fake_commands.install(*COMMANDS[name])
    fake_commands.answer(cmd, stdout="queue is closed today\n")
    with pytest.raises(SchedulerError, match=f"^{get(name).spec.label}: {cmd} printed no job id: queue is closed"):  # type: ignore[attr-defined]
        get(name).submit(_req(tmp_path))


def test_slurm_status_and_cancel_through_the_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    squeue = _ok("5 RUNNING None\n6 PENDING Priority\n7 COMPLETED None\n")
    s, replay = _sched("slurm", monkeypatch, tmp_path, squeue, _Result(1, "", "slurm_load_jobs error\n"),
                       _Result(1, "", "scancel: error: Kill job error on job id 5: Invalid job id specified\n"))
    got = s.status(["5", "6", "7"])
    assert [got[i].state for i in "567"] == [BatchState.RUNNING, BatchState.QUEUED, BatchState.FINISHED]
    assert got["6"].message == "Priority"
    assert replay.calls[1][0] == ["scontrol", "-o", "show", "job", "7"]
    s.cancel("5")  # Slurm no longer knows it: fine
    assert replay.calls[2][0] == ["scancel", "5"]


@pytest.mark.parametrize(("name", "cmd"), [("cobalt", "qdel"), ("lsf", "bkill"), ("slurm", "scancel")])
def test_cancel_refused_is_a_scheduler_error(
    name: str, cmd: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s, replay = _sched(name, monkeypatch, tmp_path, _Result(1, "", "Permission denied\nby policy\n"))
    with pytest.raises(SchedulerError, match=f"^{s.spec.label}: {cmd} 12 failed: Permission denied; by policy$"):
        s.cancel("12")
    assert replay.calls[0][0] == [cmd, "12"]


# ---------------------------------------------------------------- faults and the user's mistakes


def test_scheduler_faults_are_faults_and_bad_requests_user_errors() -> None:
    assert issubclass(SchedulerError, Fault) and not issubclass(SchedulerError, UserError)
    assert issubclass(SchedulerUnavailable, SchedulerError)
    assert issubclass(BadBatchRequest, UserError) and not issubclass(BadBatchRequest, Fault)
    with pytest.raises(UserError, match="unknown scheduler"):
        get("sge")
    with pytest.raises(UserError, match="bad options for scheduler 'pbs'"):
        get("pbs", seconds_per_minute=1)


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"num_nodes": 0}, "at least 1 node, got 0"),
        ({"wall_time_min": 0}, "at least 1 minute"),
        ({"command": []}, "empty command"),
        ({"env": {"BAD-NAME": "x"}}, "invalid environment variable name in batch request: 'BAD-NAME'"),
        ({"queue": "debug\n#PBS -l select=999"}, "contains a line break"),
        ({"extra": ["--qos=a\r"]}, "contains a line break"),
    ],
)
@pytest.mark.parametrize("name", ["slurm", "pbs", "cobalt", "lsf", "local"])
def test_bad_requests_are_user_errors_and_write_nothing(
    name: str, kw: dict[str, object], text: str, tmp_path: Path, fake_commands: FakeCommands
) -> None:
    fake_commands.install(*COMMANDS.get(name, ()))
    s = get(name, state_dir=tmp_path / "state") if name == "local" else get(name)
    with pytest.raises(BadBatchRequest, match=text):
        s.submit(_req(tmp_path, **kw))
    assert not (tmp_path / "wd").exists()


def test_missing_command_is_a_fault_not_worth_retrying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SchedulerUnavailable) as exc:
        get("slurm").submit(_req(tmp_path))
    assert isinstance(exc.value, Fault) and not exc.value.transient


@pytest.mark.parametrize(
    ("err", "cls", "transient"),
    [
        ("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation", SchedulerUnavailable,
         True),
        ("sbatch: error: Unable to contact slurm controller (connect failure)", SchedulerUnavailable, True),
        ("sbatch: error: Batch job submission failed: Invalid partition name specified", SchedulerError, False),
    ],
)
def test_a_scheduler_that_is_down_is_transient_a_refusal_is_not(
    err: str, cls: type[SchedulerError], transient: bool, tmp_path: Path, fake_commands: FakeCommands
) -> None:
    fake_commands.install(*COMMANDS["slurm"])
    fake_commands.answer("sbatch", stderr=err + "\n", rc=1)
    with pytest.raises(SchedulerError) as exc:
        get("slurm").submit(_req(tmp_path))
    assert type(exc.value) is cls and exc.value.transient is transient
    assert str(exc.value) == f"Slurm: sbatch failed: {err}"


def test_a_command_that_does_not_answer_is_transient(tmp_path: Path, fake_commands: FakeCommands) -> None:
    fake_commands.install(*COMMANDS["pbs"])
    (fake_commands.bindir / "qsub").write_text("#!/bin/sh\nsleep 5\n")
    s = get("pbs")
    s._timeout_s = 0.2  # type: ignore[attr-defined,misc]
    with pytest.raises(SchedulerUnavailable, match="^PBS: qsub did not answer in 0 s$") as exc:
        s.submit(_req(tmp_path))
    assert exc.value.transient
