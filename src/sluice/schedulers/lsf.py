"""IBM Spectrum LSF (CSM-style, as on Summit/Lassen): ``bsub < SCRIPT``, ``bjobs -json``, ``bkill``.

``bjobs -a`` keeps finished jobs for ``CLEAN_PERIOD`` (1 h by default) with their exit code and reason;
an id it no longer knows comes back as a record with ``ERROR: Job <id> is not found`` -> FINISHED.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from sluice.schedulers.base import BatchScheduler, BatchState, BatchStatus, Spec, output_line

_FIELDS = "jobid stat exit_code exit_reason"


class LSFScheduler(BatchScheduler):
    """Launcher batch jobs on LSF; ``queue`` is ``-q``, ``project`` is ``-P``; nodes via ``-nnodes``."""

    name: ClassVar[str] = "lsf"
    spec: ClassVar[Spec] = Spec(
        label="LSF",
        commands=("bsub", "bjobs", "bkill"),
        prefix="#BSUB",
        options=(
            "-J {name}",
            "-nnodes {nodes}",
            "-W {minutes}",
            "-cwd {workdir}",
            "-o {stem}.%J.out",
            "-e {stem}.%J.err",
        ),
        queue="-q {queue}",
        project="-P {project}",
        submit=("bsub",),
        stdin=True,  # bsub reads #BSUB directives only from a script piped to it
        job_id=re.compile(r"Job <(\d+)> is submitted"),
        job_var="${LSB_JOBID}",
        states={
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
        },
        cancel="bkill",
        gone=("already finished", "no matching job", "is not found"),
    )

    def status(self, native_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """See :meth:`Scheduler.status`."""
        if not native_ids:
            return {}
        res = self._run(["bjobs", "-a", "-json", "-o", _FIELDS, *native_ids])
        try:
            records = json.loads(res.stdout).get("RECORDS", [])
        except ValueError:
            return self._unknown_all(native_ids, f"bjobs failed: {output_line(res.stderr or res.stdout)[:200]}")
        by_id = {str(r.get("JOBID")): r for r in records if isinstance(r, dict)}
        return {i: self._one(i, by_id.get(i)) for i in native_ids}

    def _one(self, native_id: str, rec: dict[str, Any] | None) -> BatchStatus:
        if rec is None or "ERROR" in rec:
            why = str(rec["ERROR"]) if rec else "no longer known to LSF"
            return BatchStatus(native_id, BatchState.FINISHED, why)
        state = self._map_state(str(rec.get("STAT", "")), native_id)
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
