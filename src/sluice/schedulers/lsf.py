"""IBM Spectrum LSF (CSM-style, as on Summit/Lassen): ``bsub < SCRIPT``, ``bjobs -json``, ``bkill``.

``bjobs -a`` keeps finished jobs for ``CLEAN_PERIOD`` (1 h by default) with their exit code and reason;
an id it no longer knows comes back as a record with ``ERROR: Job <id> is not found`` -> FINISHED.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

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

_SUBMITTED = re.compile(r"Job <(\d+)> is submitted")
_GONE = ("already finished", "no matching job", "is not found")
_FIELDS = "jobid stat exit_code exit_reason"


class LSFScheduler(BatchScheduler):
    """Launcher batch jobs on LSF; ``queue`` is ``-q``, ``project`` is ``-P``; nodes via ``-nnodes``."""

    name: ClassVar[str] = "lsf"
    _label: ClassVar[str] = "LSF"
    _commands: ClassVar[tuple[str, ...]] = ("bsub", "bjobs", "bkill")

    _STATE_MAP: ClassVar[dict[str, BatchState]] = {
        "PEND": BatchState.QUEUED,
        "PSUSP": BatchState.QUEUED,
        "WAIT": BatchState.QUEUED,
        "PROV": BatchState.QUEUED,
        "RUN": BatchState.RUNNING,
        "USUSP": BatchState.RUNNING,
        "SSUSP": BatchState.RUNNING,
        "UNKWN": BatchState.RUNNING,  # mbatchd lost contact with the host; the job may still run
        "ZOMBI": BatchState.RUNNING,
        "DONE": BatchState.FINISHED,
        "EXIT": BatchState.FAILED,  # refined by the exit reason below
    }

    def submit(self, req: BatchRequest) -> str:
        """Write a ``#BSUB`` script and pipe it to ``bsub``: LSF reads directives only from stdin."""
        validate(req)
        self.check()
        script = write_script(req, lambda stem: self._directives(req, stem), "lsf:${LSB_JOBID}", ".sh")
        out = self._run_ok(["bsub"], stdin=script.read_text())
        m = _SUBMITTED.search(out)
        if m is None:
            raise SchedulerError(f"LSF: bsub printed no job id: {one_line(out)}")
        return m.group(1)

    @staticmethod
    def _directives(req: BatchRequest, stem: Path) -> list[str]:
        lines = [
            f"-J {safe_name(req.job_name)}",
            f"-nnodes {req.num_nodes}",
            f"-W {req.wall_time_min}",
            f"-cwd {req.workdir}",
            f"-o {stem}.%J.out",
            f"-e {stem}.%J.err",
        ]
        if req.queue:
            lines.append(f"-q {req.queue}")
        if req.project:
            lines.append(f"-P {req.project}")
        return [f"#BSUB {d}" for d in (*lines, *req.extra)]

    def status(self, native_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """See :meth:`Scheduler.status`."""
        if not native_ids:
            return {}
        res = self._run(["bjobs", "-a", "-json", "-o", _FIELDS, *native_ids])
        try:
            records = json.loads(res.stdout).get("RECORDS", [])
        except ValueError:
            return self._unknown_all(native_ids, f"bjobs failed: {one_line(res.stderr or res.stdout)[:200]}")
        by_id = {str(r.get("JOBID")): r for r in records if isinstance(r, dict)}
        return {i: self._one(i, by_id.get(i)) for i in native_ids}

    def _one(self, native_id: str, rec: dict[str, Any] | None) -> BatchStatus:
        if rec is None or "ERROR" in rec:
            why = str(rec["ERROR"]) if rec else "no longer known to LSF"
            return BatchStatus(native_id, BatchState.FINISHED, why)
        state = self._map_state(self._STATE_MAP, str(rec.get("STAT", "")), native_id)
        reason = str(rec.get("EXIT_REASON", "") or "")
        code_s = str(rec.get("EXIT_CODE", "") or "")
        code = int(code_s) if code_s.lstrip("-").isdigit() else None
        if state is BatchState.FINISHED:
            code = 0 if code is None else code
        elif state is BatchState.FAILED:
            low = reason.lower()
            if "runlimit" in low or "run time limit" in low:
                state = BatchState.TIMEOUT
            elif "owner" in low or "bkill" in low:
                state = BatchState.CANCELLED
        return BatchStatus(native_id, state, reason, code)

    def cancel(self, native_id: str) -> None:
        """``bkill`` the job; LSF saying it already finished is fine."""
        res = self._run(["bkill", native_id])
        text = (res.stderr + res.stdout).lower()
        if res.returncode != 0 and not any(g in text for g in _GONE):
            raise SchedulerError(f"LSF: bkill {native_id} failed: {one_line(res.stderr or res.stdout)}")

