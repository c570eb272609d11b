"""What a launcher is told (Options), the jobs that lets it take (selection), and what it reports when it
returns (Summary)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sluice import environ
from sluice.api.claims import Selection
from sluice.launcher.nodes import Allocation
from sluice.states import Change, S

DEFAULT_IDLE_S = 10.0


@dataclass
class Options:
    """What `sluice launcher` takes; every field has a sensible default."""

    job_mode: str = "serial"
    workflows: tuple[str, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    max_jobs: int | None = None
    max_ranks: int | None = None
    wall_time_min: float | None = None
    idle_timeout: float | None = None
    """Seconds with nothing to run before exiting, whatever the database holds (a launcher waiting in its
    allocation for the next shot). None: exit as soon as every job it could run has ended, else after
    DEFAULT_IDLE_S with nothing to run."""
    consume_all: bool = False
    claim_batch: int = 2000
    buffer_s: float = 4.0
    flush_interval: float = 0.05
    max_unwritten: int | None = None
    """State changes the launcher may hold that the database does not show yet: past this, no job starts
    until the writer catches up. None: two per slot of the allocation, at least 20,000 (a job's end and its
    slot's restart: one round of the allocation, which a burst of ends needs). Without a bound a launcher
    outrunning its database (zero-length jobs on 65,536 slots) held 180,000 changes, 9 s of writing, all re-run
    after a kill -9; at one a slot, 10 s jobs ending in waves stopped every start for 1-1.5 s in each wave."""
    heartbeat_s: float = 10.0
    stale_after_s: float = 60.0
    end_margin_s: float | None = None
    kill_grace_s: float = 10.0
    launch_interval_s: float = 0.0
    max_launches: int | None = None
    workers: int = 2
    status: bool = True
    mpi_launcher: str | None = None
    batch_job_id: int | None = None
    queue: str | None = None
    machine: str | None = None
    loop_slice_us: int = 100  # the CPU slice the main loop asks for (latency.py); 0: the kernel's default
    standby: bool = True
    """Short one-core jobs wait in the spawner, each started the moment a task of this node ends (starts.py);
    False: every start goes through the loop (benchmarks compare the two)."""
    simulate: bool = False
    """Benchmarks and tests only, never a CLI flag (launcher/simulate.py): every task is a timer of its job's
    `data["sim_s"]` seconds (else `sim_duration_s`) on simulated node agents; the database, claims, packing,
    the writer, events, heartbeats and recovery are the real ones."""
    sim_duration_s: float = 0.0
    sim_nodes: int | None = None
    """Without an explicit allocation, a simulated launcher makes one of this many nodes (default 1) ..."""
    sim_cores: int | None = None
    """... with this many cores each (default: this machine's)."""


def selection(opts: Options, alloc: Allocation, machine: str | None) -> Selection:
    """The jobs a launcher with these options may claim: its workflows, tags and pins, and what fits `alloc`."""
    nodes = alloc.nodes
    return Selection(
        workflows=tuple(opts.workflows), tags=tuple(opts.tags), max_nodes=len(nodes) if opts.job_mode == "mpi" else 1,
        max_cores=max((n.cores for n in nodes), default=1), max_gpus=max((len(n.gpus) for n in nodes), default=0),
        serial_only=opts.job_mode == "serial", queue=opts.queue or os.environ.get(environ.QUEUE),
        machine=opts.machine or machine)


EXIT_FAULT = 3
"""The exit code of a launcher stopped by a fault of the environment (as the CLI's for a Fault)."""


@dataclass
class Summary:
    """What a launcher did, why it stopped (`reason`), and the fault of the environment that stopped it or
    struck while it was stopping (`fault`: a full disk, a database gone), if any."""

    session_id: int = 0
    started: int = 0
    finished: int = 0
    failed: int = 0
    retried: int = 0
    handed_over: int = 0  # of those started, how many as standby tasks (started by the engine, starts.py)
    seconds: float = 0.0
    reason: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    fault: str | None = None

    @property
    def exit_code(self) -> int:
        """0, or EXIT_FAULT when a fault stopped the launcher (its jobs are recovered, not lost)."""
        return EXIT_FAULT if self.fault else 0

    def count(self, done: list[Change]) -> None:
        """Count the changes that took effect."""
        for c in done:
            if c.to_state == S.JOB_FINISHED:
                self.finished += 1
            elif c.to_state == S.FAILED:
                self.failed += 1
            elif c.to_state == S.RESTART_READY:
                self.retried += 1

    def status(self, running: int, elapsed: float) -> str:
        """The live status line."""
        return (f"running {running} | done {self.finished} | failed {self.failed} | retry {self.retried} | "
                f"{self.started / max(1e-9, elapsed):.0f} jobs/s")

    def line(self) -> str:
        rate = self.started / self.seconds if self.seconds > 0 else 0.0
        also = f"; then {self.fault}" if self.fault and self.fault != self.reason else ""
        return (f"launcher {self.session_id}: {self.started} started, {self.finished} finished, {self.failed} failed, "
                f"{self.retried} to retry in {self.seconds:.1f} s ({rate:.0f} jobs/s); stopped: {self.reason}{also}")
