"""Cobalt (ALCF Theta era): ``qsub -n -t -q -A --mode script``, ``qstat --header JobId:State``, ``qdel``.

Cobalt takes its options on the qsub command line (``extra`` items are appended there, before the script)
and forgets a job as soon as it ends: no exit code is available from qstat, so a job gone from the queue
is FINISHED; the ``<stem>.cobaltlog`` in the workdir tells the rest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from sluice.schedulers.base import BatchScheduler, BatchState, BatchStatus, Spec, output_line


class CobaltScheduler(BatchScheduler):
    """Launcher batch jobs on Cobalt; ``queue`` is ``-q``, ``project`` is ``-A``.

    Script mode: no ``prefix``, so the options go on the qsub command line and the script has no directives.
    """

    name: ClassVar[str] = "cobalt"
    spec: ClassVar[Spec] = Spec(
        label="Cobalt",
        commands=("qsub", "qstat", "qdel"),
        prefix=None,
        options=(
            "-n {nodes}",
            "-t {minutes}",
            "--mode script",
            "--jobname {name}",
            "--cwd {workdir}",
            "-O {stem}",
        ),
        queue="-q {queue}",
        project="-A {project}",
        submit=("qsub",),
        job_id=re.compile(r"(?m)^\s*(\d+)\s*\Z"),  # the last line
        job_var="${COBALT_JOBID}",
        states={
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
        },
        cancel="qdel",  # Cobalt ignores ids it does not know: every failure is an error
    )

    def status(self, native_ids: Sequence[str]) -> dict[str, BatchStatus]:
        """See :meth:`Scheduler.status`; Cobalt exits 1 with no output when it knows none of the ids."""
        ids = [i for i in native_ids if i.isdigit()]
        result = {i: BatchStatus(i, BatchState.FINISHED, "no longer known to Cobalt") for i in native_ids}
        if not ids:
            return result
        res = self._run(["qstat", "--header", "JobId:State", *ids])
        if res.returncode != 0 and (res.stdout.strip() or res.stderr.strip()):
            return {**result, **self._unknown_all(ids, f"qstat failed: {output_line(res.stderr or res.stdout)}")}
        for jid, code in self._parse_qstat(res.stdout):
            if jid in result:
                result[jid] = BatchStatus(jid, self._map_state(code, jid), code)
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
