"""Moving a batch of jobs' data: stage-in before the run, stage-out after a good one.

Why batches: one Globus task, one ssh connection or one http session serves every file of a group of jobs
that goes between the same two places, so the items of all the jobs in a call are grouped by transfer kind
and remote endpoint, and the groups run a few at once (`[transfers] concurrency`). A group that fails for a
reason a retry can help (network, a busy remote) is tried again with a doubling wait, up to `attempts`; a
group that fails for good is split into its jobs, so that the job whose file is missing fails and the others
go on. Nothing here writes the database: the caller turns the outcomes into state changes.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlparse

from sluice import transfers
from sluice.api import Job
from sluice.config import TransferPolicy
from sluice.errors import DiskFull, one_line
from sluice.states import FREE, Change, S
from sluice.transfers import Item, TransferError, TransferState, TransferStatus
from sluice.transfers.entries import Parent, plan_in, plan_out, stage_in, stage_out

log = logging.getLogger("sluice.staging")

ParentsOf = Callable[[Job], Sequence[Job]]


@dataclass
class Outcome:
    """What staging did for one job: `error` is None when every item arrived."""

    job_id: int
    error: str | None = None
    files: int = 0


def _remote(item: Item) -> str:
    url = item.dest if item.put else item.src
    if "://" in url:
        return urlparse(url).netloc
    return url.partition(":")[0] if transfers.scheme(url) == "rsync" else ""


class Stager:
    """`Stager(policy).stage_in(jobs, parents_of)` and `.stage_out(jobs)`: outcomes by job, in job order."""

    def __init__(self, policy: TransferPolicy | None = None, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy or TransferPolicy()
        self.sleep = sleep

    def stage_in(self, jobs: Sequence[Job], parents_of: ParentsOf) -> list[Outcome]:
        plans: dict[int, list[Item]] = {}
        out = {j.id: Outcome(j.id) for j in jobs}
        for j in jobs:
            try:
                entries = stage_in(j.stage_in)
                parents = [Parent(p.id, p.name, p.path) for p in parents_of(j)] if any(e.parents for e in entries) \
                    else []
                j.path.mkdir(parents=True, exist_ok=True)
                plans[j.id] = plan_in(entries, j.path, parents)
            except (TransferError, OSError, ValueError) as e:
                if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DiskFull(f"disk full: job {j.id}: {one_line(e)}") from e
                out[j.id].error = f"stage-in failed: {one_line(e)}"
        self._run(plans, out, "stage-in")
        return list(out.values())

    def stage_out(self, jobs: Sequence[Job]) -> list[Outcome]:
        plans: dict[int, list[Item]] = {}
        out = {j.id: Outcome(j.id) for j in jobs}
        for j in jobs:
            try:
                plans[j.id] = plan_out(stage_out(j.stage_out), j.path)
            except (TransferError, ValueError) as e:
                out[j.id].error = f"stage-out failed: {one_line(e)}"
        self._run(plans, out, "stage-out")
        return list(out.values())

    def _run(self, plans: dict[int, list[Item]], out: dict[int, Outcome], what: str) -> None:
        groups: dict[tuple[str, str], list[tuple[int, Item]]] = {}
        for jid, items in plans.items():
            for it in items:
                kind = transfers.scheme(it.dest if it.put else it.src)
                groups.setdefault((kind, _remote(it)), []).append((jid, it))
        if not groups:
            return
        with ThreadPoolExecutor(max_workers=min(self.policy.concurrency, len(groups)),
                                thread_name_prefix="sluice-transfer") as pool:
            done = pool.map(lambda kv: (kv[0], self._group(kv[0][0], kv[1])), groups.items())
            for (_kind, _remote_host), results in done:
                for jid, err, n in results:
                    o = out[jid]
                    o.files += n
                    if err and o.error is None:
                        o.error = f"{what} failed: {err}"

    def _group(self, kind: str, pairs: list[tuple[int, Item]]) -> list[tuple[int, str | None, int]]:
        """Move one endpoint group; on a lasting failure, once more job by job to find whose it is."""
        status = self._attempts(kind, [it for _, it in pairs])
        if status.state == TransferState.DONE:
            counts: dict[int, int] = {}
            for jid, _ in pairs:
                counts[jid] = counts.get(jid, 0) + 1
            return [(jid, None, n) for jid, n in counts.items()]
        by_job: dict[int, list[Item]] = {}
        for jid, it in pairs:
            by_job.setdefault(jid, []).append(it)
        if len(by_job) == 1:
            ((jid, items),) = by_job.items()
            return [(jid, status.message, 0)]
        results = []
        for jid, items in by_job.items():
            st = self._attempts(kind, items, tries=1)
            results.append((jid, None if st.state == TransferState.DONE else st.message,
                            len(items) if st.state == TransferState.DONE else 0))
        return results

    def _attempts(self, kind: str, items: list[Item], tries: int | None = None) -> TransferStatus:
        tries = tries or self.policy.attempts
        delay = self.policy.backoff_s
        status = TransferStatus(TransferState.FAILED, "not tried")
        for i in range(tries):
            try:
                t = transfers.get(kind)
                handle = t.submit(items)
                status = t.poll(handle)
                while status.state == TransferState.ACTIVE:
                    self.sleep(1.0)
                    status = t.poll(handle)
            except TransferError as e:
                status = TransferStatus(TransferState.FAILED, one_line(e), e.transient)
            if status.state == TransferState.DONE or not status.transient or i == tries - 1:
                return status
            log.warning("transfer of %d item(s) by %s failed, try %d of %d in %.0f s: %s", len(items), kind, i + 2,
                        tries, delay, status.message)
            self.sleep(delay)
            delay *= 2
        return status



def stage_in_changes(outcomes: Sequence[Outcome], preprocessed: Callable[[int], bool]) -> list[Change]:
    """The state changes for stage-in outcomes: READY -> STAGED_IN (and on to PREPROCESSED when the job's app
    has no preprocess hook), or FAILED with the reason; every change lets go of the job's session."""
    out: list[Change] = []
    for o in outcomes:
        if o.error is not None:
            out.append(Change(o.job_id, S.READY, S.FAILED, o.error, fields=FREE))
        elif preprocessed(o.job_id):
            out.append(Change(o.job_id, S.READY, S.PREPROCESSED, f"staged in {o.files} file(s)", via=(S.STAGED_IN,),
                              fields=FREE))
        else:
            out.append(Change(o.job_id, S.READY, S.STAGED_IN, f"staged in {o.files} file(s)", fields=FREE))
    return out
