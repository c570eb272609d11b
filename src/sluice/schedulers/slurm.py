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
from pathlib import Path
from typing import ClassVar

from sluice.schedulers.base import (
    BatchRequest,
    BatchScheduler,
    BatchState,
    BatchStatus,
    SchedulerError,
    one_line,
    safe_name,
    validate,
    write_script,
)

_ID = re.compile(r"^[0-9]+([_+][0-9]+)?$")
_GONE = ("invalid job id", "already completing or completed")


class SlurmScheduler(BatchScheduler):
    """Launcher batch jobs on Slurm; ``queue`` is the partition and ``project`` the account."""

    name: ClassVar[str] = "slurm"
    _label: ClassVar[str] = "Slurm"
    _commands: ClassVar[tuple[str, ...]] = ("sbatch", "squeue", "scontrol", "scancel")

    _STATE_MAP: ClassVar[dict[str, BatchState]] = {
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

    def submit(self, req: BatchRequest) -> str:
        """Write an ``#SBATCH`` script into the workdir and submit it; return the job id."""
        validate(req)
        self.check()
        script = write_script(req, lambda stem: self._directives(req, stem), "slurm:${SLURM_JOB_ID}", ".sh")
        out = self._run_ok(["sbatch", "--parsable", str(script)])
        native_id = out.strip().split(";")[0]
        if not _ID.match(native_id):
            raise SchedulerError(f"Slurm: sbatch printed no job id: {one_line(out)}")
        return native_id

    @staticmethod
    def _directives(req: BatchRequest, stem: Path) -> list[str]:
        lines = [
            f"--job-name={safe_name(req.job_name)}",
            f"--nodes={req.num_nodes}",
            f"--time={req.wall_time_min}",
            f"--chdir={req.workdir}",
            f"--output={stem}-%j.out",
            f"--error={stem}-%j.err",
        ]
        if req.queue:
            lines.append(f"--partition={req.queue}")
        if req.project:
            lines.append(f"--account={req.project}")
        return [f"#SBATCH {d}" for d in (*lines, *req.extra)]

    def status(self, native_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """See :meth:`Scheduler.status`: ``squeue`` for all, ``scontrol`` for ended or vanished jobs."""
        result = {i: BatchStatus(i, BatchState.FINISHED, "not a Slurm job id") for i in native_ids}
        ids = [i for i in native_ids if _ID.match(i)]
        if not ids:
            return result
        res = self._run(["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i %T %r"])
        if res.returncode != 0 and "invalid job id" not in res.stderr.lower():
            return {**result, **self._unknown_all(ids, f"squeue failed: {one_line(res.stderr)}")}
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
            out[jid] = BatchStatus(jid, self._map_state(self._STATE_MAP, code, jid), reason)
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
        state = self._map_state(self._STATE_MAP, code, native_id)
        reason = fields.get("Reason", "None")
        message = code if reason in ("None", "") else f"{code} ({reason})"
        return BatchStatus(native_id, state, message, _exit_code(fields.get("ExitCode", "")))

    def cancel(self, native_id: str) -> None:
        """``scancel`` the job; Slurm saying it already ended is fine."""
        res = self._run(["scancel", native_id])
        if res.returncode != 0 and not any(g in res.stderr.lower() for g in _GONE):
            raise SchedulerError(f"Slurm: scancel {native_id} failed: {one_line(res.stderr or res.stdout)}")


def _exit_code(text: str) -> int | None:
    """``ExitCode=3:0`` -> 3; ``0:15`` (killed by signal 15) -> -15; unparsable -> None."""
    code, _, sig = text.partition(":")
    if not (code.isdigit() and sig.isdigit()):
        return None
    return -int(sig) if int(sig) else int(code)
