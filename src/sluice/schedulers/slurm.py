"""Slurm through its own commands: ``sbatch --parsable``, ``squeue``, ``scontrol show job``, ``scancel``.

Why not psij-python here: our interface is stateless (a restarted service asks about any native id), while
psij tracks ``Job`` objects from a polling thread (30 s by default) and needs ``attach`` per job; it has no
TIMEOUT state (only the message "The job exhausted its time limit"), and its exit code comes from a file its
own wrapper script writes under ``~/.psij``. Four commands and one state table serve us more directly.

There is no ``sacct`` on many clusters (nor here): a finished job is read from ``squeue -t all`` and
``scontrol show job`` while Slurm keeps it (MinJobAge, 300 s by default); after that it is FINISHED.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from sluice.schedulers.base import BatchScheduler, BatchState, BatchStatus, Spec, output_line

_ID = re.compile(r"^[0-9]+([_+][0-9]+)?$")

_STATES = {
    "PENDING": BatchState.QUEUED,
    "REQUEUED": BatchState.QUEUED,
    "REQUEUE_FED": BatchState.QUEUED,
    "REQUEUE_HOLD": BatchState.QUEUED,
    "RESV_DEL_HOLD": BatchState.QUEUED,
    "CONFIGURING": BatchState.RUNNING,
    "RUNNING": BatchState.RUNNING,
    "COMPLETING": BatchState.RUNNING,
    "RESIZING": BatchState.RUNNING,
    "SIGNALING": BatchState.RUNNING,
    "STAGE_OUT": BatchState.RUNNING,
    "SUSPENDED": BatchState.RUNNING,
    "STOPPED": BatchState.RUNNING,
    "COMPLETED": BatchState.FINISHED,
    "FAILED": BatchState.FAILED,
    "BOOT_FAIL": BatchState.FAILED,
    "NODE_FAIL": BatchState.FAILED,
    "OUT_OF_MEMORY": BatchState.FAILED,
    "SPECIAL_EXIT": BatchState.FAILED,
    "REVOKED": BatchState.FAILED,
    "PREEMPTED": BatchState.FAILED,
    "TIMEOUT": BatchState.TIMEOUT,
    "DEADLINE": BatchState.TIMEOUT,
    "CANCELLED": BatchState.CANCELLED,
}


class SlurmScheduler(BatchScheduler):
    """Launcher batch jobs on Slurm; ``queue`` is the partition and ``project`` the account."""

    name: ClassVar[str] = "slurm"
    spec: ClassVar[Spec] = Spec(
        label="Slurm",
        commands=("sbatch", "squeue", "scontrol", "scancel"),
        prefix="#SBATCH",
        options=(
            "--job-name={name}",
            "--nodes={nodes}",
            "--time={minutes}",
            "--chdir={workdir}",
            "--output={stem}-%j.out",
            "--error={stem}-%j.err",
        ),
        queue="--partition={queue}",
        project="--account={project}",
        submit=("sbatch", "--parsable"),
        job_id=re.compile(r"(?s)\A\s*([0-9]+(?:[_+][0-9]+)?)(?:;.*|\s*)\Z"),  # "id" or "id;cluster"
        job_var="${SLURM_JOB_ID}",
        states=_STATES,
        cancel="scancel",
        gone=("invalid job id", "already completing or completed"),
    )

    def status(self, native_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """See :meth:`Scheduler.status`: ``squeue`` for all, ``scontrol`` for ended or vanished jobs."""
        result = {i: BatchStatus(i, BatchState.FINISHED, "not a Slurm job id") for i in native_ids}
        ids = [i for i in native_ids if _ID.match(i)]
        if not ids:
            return result
        res = self._run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %T %r"])
        if res.returncode != 0 and "invalid job id" not in res.stderr.lower():
            return {**result, **self._unknown_all(ids, f"squeue failed: {output_line(res.stderr)}")}
        queued = self._parse_squeue(res.stdout)
        for i in ids:
            st = queued.get(i)
            if st is None or st.state.is_terminal:
                gone = BatchStatus(i, BatchState.FINISHED, "no longer known to Slurm")
                st = self._scontrol(i) or st or gone
            result[i] = st
        return result

    def _parse_squeue(self, text: str) -> dict[str, BatchStatus]:
        out = {}
        for line in text.splitlines():
            parts = line.split(None, 2)
            if len(parts) < 2:
                continue
            jid, code = parts[0], parts[1]
            reason = parts[2].strip() if len(parts) > 2 and parts[2].strip() != "None" else ""
            out[jid] = BatchStatus(jid, self._map_state(code, jid), reason)
        return out

    def _scontrol(self, native_id: str) -> BatchStatus | None:
        """Final state and exit code from ``scontrol show job``; None if Slurm forgot the job."""
        res = self._run(["scontrol", "-o", "show", "job", native_id])
        if res.returncode != 0:
            return None
        return self._parse_scontrol(native_id, res.stdout)

    def _parse_scontrol(self, native_id: str, text: str) -> BatchStatus | None:
        fields = dict(re.findall(r"(\w+)=(\S*)", text))
        if "JobState" not in fields:
            return None
        code = fields["JobState"]
        state = self._map_state(code, native_id)
        reason = fields.get("Reason", "None")
        message = code if reason in ("None", "") else f"{code} ({reason})"
        return BatchStatus(native_id, state, message, _exit_code(fields.get("ExitCode", "")))


def _exit_code(text: str) -> int | None:
    """``ExitCode=3:0`` -> 3; ``0:15`` (killed by signal 15) -> -15; unparsable -> None."""
    code, _, sig = text.partition(":")
    if not (code.isdigit() and sig.isdigit()):
        return None
    return -int(sig) if int(sig) else int(code)
