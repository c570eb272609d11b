"""Cobalt (ALCF Theta era): ``qsub -n -t -q -A --mode script``, ``qstat --header JobId:State``, ``qdel``.

Cobalt takes its options on the qsub command line (``extra`` items are appended there, before the script)
and forgets a job as soon as it ends: no exit code is available from qstat, so a job gone from the queue
is FINISHED; the ``<stem>.cobaltlog`` in the workdir tells the rest.
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


class CobaltScheduler(BatchScheduler):
    """Launcher batch jobs on Cobalt; ``queue`` is ``-q``, ``project`` is ``-A``."""

    name: ClassVar[str] = "cobalt"
    _label: ClassVar[str] = "Cobalt"
    _commands: ClassVar[tuple[str, ...]] = ("qsub", "qstat", "qdel")

    _STATE_MAP: ClassVar[dict[str, BatchState]] = {
        "queued": BatchState.QUEUED,
        "hold": BatchState.QUEUED,
        "user_hold": BatchState.QUEUED,
        "admin_hold": BatchState.QUEUED,
        "dep_hold": BatchState.QUEUED,
        "maxrun_hold": BatchState.QUEUED,
        "user_hold_dep_hold": BatchState.QUEUED,
        "starting": BatchState.RUNNING,
        "running": BatchState.RUNNING,
        "exiting": BatchState.RUNNING,
        "killing": BatchState.RUNNING,  # still holds its nodes; CANCELLED once it leaves the queue
        "dep_fail": BatchState.FAILED,
    }

    def submit(self, req: BatchRequest) -> str:
        """Write the script into the workdir and submit it in script mode; return the job id."""
        validate(req)
        self.check()
        script = write_script(req, lambda stem: [], "cobalt:${COBALT_JOBID}", ".sh")
        out = self._run_ok(self._submit_argv(req, script))
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        if not lines or not lines[-1].isdigit():
            raise SchedulerError(f"Cobalt: qsub printed no job id: {one_line(out)}")
        return lines[-1]

    @staticmethod
    def _submit_argv(req: BatchRequest, script: Path) -> list[str]:
        argv = ["qsub", "-n", str(req.num_nodes), "-t", str(req.wall_time_min), "--mode", "script",
                "--jobname", safe_name(req.job_name), "--cwd", str(req.workdir),
                "-O", str(script.with_suffix(""))]
        if req.queue:
            argv += ["-q", req.queue]
        if req.project:
            argv += ["-A", req.project]
        return [*argv, *req.extra, str(script)]

    def status(self, native_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """See :meth:`Scheduler.status`; Cobalt exits 1 with no output when it knows none of the ids."""
        ids = [i for i in native_ids if i.isdigit()]
        result = {i: BatchStatus(i, BatchState.FINISHED, "no longer known to Cobalt") for i in native_ids}
        if not ids:
            return result
        res = self._run(["qstat", "--header", "JobId:State", *ids])
        if res.returncode != 0 and (res.stdout.strip() or res.stderr.strip()):
            return {**result, **self._unknown_all(ids, f"qstat failed: {one_line(res.stderr or res.stdout)}")}
        for jid, code in self._parse_qstat(res.stdout):
            if jid in result:
                result[jid] = BatchStatus(jid, self._map_state(self._STATE_MAP, code, jid), code)
        return result

    @staticmethod
    def _parse_qstat(text: str) -> list[tuple[str, str]]:
        """Rows of ``JobId State`` under the header and its ``====`` rule."""
        rows = []
        for line in text.splitlines():
            m = re.match(r"^\s*(\d+)\s+(\S+)\s*$", line)
            if m:
                rows.append((m.group(1), m.group(2).lower()))
        return rows

    def cancel(self, native_id: str) -> None:
        """``qdel`` the job; Cobalt ignores ids it does not know."""
        res = self._run(["qdel", native_id])
        if res.returncode != 0:
            raise SchedulerError(f"Cobalt: qdel {native_id} failed: {one_line(res.stderr or res.stdout)}")
