"""PBS Professional / OpenPBS: ``qsub SCRIPT``, ``qstat -f -F json -x IDS``, ``qdel ID``.

``-x`` includes finished jobs (kept while ``job_history_enable`` is on), which is where the exit status
comes from. An id the server no longer knows makes qstat print ``Unknown Job Id`` on stderr and exit
non-zero while still printing JSON for the other ids: that answer is read, not raised (Balsam's agent
crashed on it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from sluice.schedulers.base import BatchScheduler, BatchState, BatchStatus, Spec, output_line

_KILL_WALLTIME = -29  # JOB_EXEC_KILL_WALLTIME in PBS Pro's job.h
_KILLED_BY_QDEL = 265  # 256 + SIGKILL: what a qdel'd job reports (psij observes the same)


class PBSScheduler(BatchScheduler):
    """Launcher batch jobs on PBS Pro; ``queue`` is ``-q``, ``project`` is ``-A``."""

    name: ClassVar[str] = "pbs"
    spec: ClassVar[Spec] = Spec(
        label="PBS",
        commands=("qsub", "qstat", "qdel"),
        prefix="#PBS",
        options=(
            "-N {name}",
            "-l select={nodes}",
            "-l place=scatter:excl",  # one chunk per node, nodes not shared: the launcher packs them
            "-l walltime={hhmmss}",
            "-o {stem}.out",
            "-e {stem}.err",
        ),
        queue="-q {queue}",
        project="-A {project}",
        submit=("qsub",),
        job_id=re.compile(r"\A\s*(\d+(?:\[\d*\])?(?:\.\S+)?)\s*\Z"),  # the full id: 123.server
        job_var="${PBS_JOBID}",
        states={
            "Q": BatchState.QUEUED,
            "H": BatchState.QUEUED,
            "W": BatchState.QUEUED,
            "T": BatchState.QUEUED,
            "M": BatchState.QUEUED,
            "B": BatchState.RUNNING,
            "R": BatchState.RUNNING,
            "E": BatchState.RUNNING,  # exiting: the final exit status is not there yet
            "S": BatchState.RUNNING,
            "U": BatchState.RUNNING,
            "F": BatchState.FINISHED,  # refined by Exit_status below
            "X": BatchState.FINISHED,
        },
        cancel="qdel",
        gone=("unknown job id", "job has finished"),
    )

    def status(self, native_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """See :meth:`Scheduler.status`."""
        if not native_ids:
            return {}
        res = self._run(["qstat", "-f", "-F", "json", "-x", *native_ids])
        try:
            jobs = json.loads(res.stdout).get("Jobs", {}) if res.stdout.strip() else {}
        except ValueError:
            return self._unknown_all(native_ids, f"qstat printed no JSON: {output_line(res.stdout)[:200]}")
        if res.returncode != 0 and not jobs and "unknown job id" not in res.stderr.lower():
            return self._unknown_all(native_ids, f"qstat failed: {output_line(res.stderr)}")
        return {i: self._one(i, jobs) for i in native_ids}

    def _one(self, native_id: str, jobs: dict[str, Any]) -> BatchStatus:
        info = jobs.get(native_id) or _by_number(native_id, jobs)
        if info is None:
            return BatchStatus(native_id, BatchState.FINISHED, "no longer known to PBS")
        state = self._map_state(str(info.get("job_state")), native_id)
        comment = str(info.get("comment", ""))
        if state is not BatchState.FINISHED:
            return BatchStatus(native_id, state, comment)
        raw = info.get("Exit_status")
        if not isinstance(raw, int):
            return BatchStatus(native_id, BatchState.FINISHED, comment)
        if raw == _KILL_WALLTIME or "walltime" in comment.lower():
            return BatchStatus(native_id, BatchState.TIMEOUT, comment, raw)
        if raw == _KILLED_BY_QDEL:
            return BatchStatus(native_id, BatchState.CANCELLED, comment, -9)
        code = -(raw - 256) if raw > 256 else raw  # > 256: killed by signal (raw - 256)
        return BatchStatus(native_id, BatchState.FINISHED if raw == 0 else BatchState.FAILED, comment, code)


def _by_number(native_id: str, jobs: dict[str, Any]) -> Any:
    """qstat may print ``123.host.domain`` for ``123.host``: match on the sequence number."""
    number = native_id.split(".", 1)[0]
    for key, info in jobs.items():
        if key.split(".", 1)[0] == number:
            return info
    return None
