"""Turning a claimed job and its placement into a running process, on the right node.

On the launcher's own node tasks are spawned in-process (LocalSpawner). Serial-mode tasks on other nodes go
to one long-lived node agent per node, started once through the platform launcher (srun/mpiexec/aprun), never
one srun per task. MPI jobs are one mpiexec/srun each, started here, fanning out to their disjoint node set.

A simulated runner (benchmarks and tests: simulate.py) gives every node, its own included, a SimAgent: a node
agent whose tasks are timers, driven by one clock, whose exits come back through the same events.

Only the spawners with something to say are read on each turn of the loop (the agents whose pipes are readable,
the simulated agents whose timers went off): reading all of them was O(nodes) a turn, a few ms at 1,024 nodes.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from sluice import environ, states, templates
from sluice.api.claims import Claimed
from sluice.api.records import job_path
from sluice.errors import DiskFull, one_line
from sluice.launcher.agent import AgentClient
from sluice.launcher.faults import FULL_ERRNOS, low_space
from sluice.launcher.mpi import MPILauncher
from sluice.launcher.nodes import Allocation
from sluice.launcher.packing import Placement
from sluice.launcher.simulate import SimAgent, SimClock, task_of
from sluice.launcher.spawn import Event, LayeredEnv, LocalSpawner, Spawner, make_dir
from sluice.states import Change, S

_NODE_VARS = ("SLURMD_NODENAME", "SLURM_TOPOLOGY_ADDR")


class Runner:
    def __init__(self, alloc: Allocation, mode: str, workspace: Path, data_dir: Path,
                 mpi: MPILauncher | None, *, kill_grace: float = 5.0, simulate: float | None = None) -> None:
        """`simulate`: run every task as a timer (simulate.py) of this many seconds unless its job's data says
        otherwise; None: real processes."""
        self.alloc = alloc
        self.mode = mode
        self.data_dir = data_dir
        self.data_str = str(data_dir)
        self.mpi = mpi
        self.kill_grace = kill_grace
        self.sim_s = simulate
        self.clock = SimClock() if simulate is not None else None
        self.agents: dict[str, AgentClient] = {}
        self._by_fd: dict[int, AgentClient] = {}
        self._dirty: set[AgentClient] = set()  # agents holding spawn messages until flush()
        self.lost: list[tuple[str, int]] = []  # (node, fd) of agents gone unasked, for the launcher to drop
        self.where: dict[int, Spawner] = {}
        # Each attempt gets its own spawn id: a spawner's timers (TERM->KILL grace, wall time) are keyed by id,
        # so a retried job reusing its job id would be hit by the previous attempt's late SIGKILL.
        self._sid: dict[int, int] = {}  # job id -> spawn id of its current attempt
        self._jid: dict[int, int] = {}  # spawn id -> job id
        self._next_sid = 0
        self.prepared: set[int] = set()  # jobs whose working directory prepare() made
        self.base_env = environ.base(workspace)
        here = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
        names = [n.name for n in alloc.nodes]
        self.home = here if here in names else (names[0] if names else here)
        self.local: LocalSpawner | SimAgent
        if self.clock is not None:
            self.local = self._sim_agent(self.home)
        else:
            self.local = LocalSpawner(kill_grace=kill_grace)

    def _sim_agent(self, node: str) -> SimAgent:
        assert self.clock is not None
        agent = SimAgent(node, self.clock)
        agent.hold = True
        return agent

    def _spawner(self, node: str) -> Spawner:
        if node == self.home or self.alloc.kind == "local":
            return self.local
        agent = self.agents.get(node)
        if agent is None:
            if self.clock is not None:
                sim = self.agents[node] = self._sim_agent(node)
                return sim
            if self.mpi is None:
                raise RuntimeError(f"no platform launcher to start a node agent on {node}")
            agent = AgentClient(agent_args=["--kill-grace", str(self.kill_grace)])
            prefix = self.mpi.agent_argv(node, [])
            agent.start(prefix)
            agent.hold = True
            self.agents[node] = agent
            self._by_fd[agent.fileno()] = agent
        return agent

    def flush(self) -> None:
        """Send each agent the spawns held for it since the last flush: one write per agent per turn."""
        if self._dirty:
            for a in self._dirty:
                a.flush()
            self._dirty.clear()

    def command(self, c: Claimed, p: Placement) -> tuple[list[str], LayeredEnv]:
        """argv (the app's template filled in; an MPI launcher in front in mpi mode; the app's preamble run
        first in a shell that then execs it) and environment."""
        argv = templates.render(c.command, c.params, c.args, c.shell)
        extra = environ.job_vars(c.id, c.app_env, c.environment, c.threads_per_rank, self.base_env)
        gpus = p.gpus.get(p.nodes[0]) if p.gpus else None
        if gpus:
            extra["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        if self.mode == "mpi":
            if self.mpi is None:
                raise RuntimeError("mpi mode needs an MPI launcher (mpiexec.mpich, srun, ...) on PATH")
            argv = self.mpi.argv(argv, p.nodes, c.ranks_per_node, c.threads_per_rank, c.gpus_per_rank, extra)
        if c.preamble:  # `module load`, `source env.sh`: in the same shell, which then becomes the command
            argv = ["/bin/sh", "-c", f"{c.preamble}\nexec {shlex.join(argv)}"]
        return argv, LayeredEnv(self.base_env, extra)

    def _new_sid(self, job_id: int) -> int:
        self._next_sid += 1
        sid = self._next_sid
        self._sid[job_id] = sid
        self._jid[sid] = job_id
        return sid

    def workdir(self, c: Claimed) -> str:
        """api.job_path as a string (the default data/<workflow>/<name>_<id>): this runs per task."""
        return str(job_path(self.data_dir, c.workdir, c.workflow, c.name, c.id)) if c.workdir \
            else f"{self.data_str}/{c.workflow}/{c.name}_{c.id}"

    def prepare(self, claimed: Sequence[Claimed]) -> None:
        """Make the working directories of jobs about to start, from the claiming thread: a mkdir is a
        tenth of a task's spawn, and the main loop's time is the launcher's throughput. A full disk raises
        DiskFull (no job is to blame); other errors are left for the spawner to report as the job's."""
        if self.clock is not None:  # a simulated task writes nothing
            return
        for c in claimed:
            try:
                make_dir(self.workdir(c))
            except OSError as e:
                if e.errno in FULL_ERRNOS:
                    raise DiskFull(f"disk full: cannot make {self.workdir(c)}: {one_line(e)}") from e
                continue
            self.prepared.add(c.id)

    def outcome(self, c: Claimed, ev: Event, cut_short: str | None, *,
                pool: bool) -> tuple[list[Change], str | None, str | None]:
        """What a job's "exit" or "error" event makes: its changes; the state to hand to the transition pool
        (None: nothing to do there, or `pool` is False because the launcher is stopping); and, when the run
        failed because the disk is full, what says so (the job is retried whatever its app's policy, and the
        launcher must stop). `cut_short`: the launcher stopped the job, and why; one that still exited 0 had
        finished its work and counts as done."""
        t = float(ev.get("t") or time.time())
        if ev.get("ev") == "error":
            rc, timed_out, why = 127, False, str(ev.get("msg"))
        elif cut_short is not None and int(ev.get("rc", -15)) != 0:
            rc, timed_out, why = int(ev.get("rc", -15)), True, f"stopped: {cut_short}"
        else:
            rc, timed_out, why = int(ev["rc"]), bool(ev.get("timed_out")), None
            if timed_out:
                why = f"exceeded its wall time of {c.wall_time_min:g} min"
        if rc and not timed_out and (full := self.disk_full(c, ev, rc)) is not None:
            return states.after_failure(c.id, S.RUNNING, full, via=S.RUN_ERROR, retry_count=c.retry_count,
                                        max_retries=c.max_retries, data={"exit_code": rc}, at=t), None, full
        after = states.exit_state(rc, timed_out)
        needs = states.needs_hook(after, postprocess=c.postprocess, stage_out=c.stage_out,
                                  error_handler=c.error_handler, timeout_handler=c.timeout_handler)
        changes, to_pool = states.after_exit(c.id, rc, timed_out, retry_count=c.retry_count,
                                             max_retries=c.max_retries, on_error=c.on_error,
                                             on_timeout=c.on_timeout, needs_pool=needs and pool, t=t, why=why)
        if c.deadline is not None and t > c.deadline and changes:  # said where users look: history and ls
            last = changes[-1]
            late = f"missed its deadline by {t - c.deadline:.1f} s"
            last.message = f"{last.message}; {late}" if last.message else late
        return changes, (after if to_pool else None), None

    def disk_full(self, c: Claimed, ev: Event, rc: int) -> str | None:
        """Why this failed run is the full disk's fault, not the job's (None: it may well be the job's). Asked
        only of runs that failed: a spawn that hit ENOSPC/EDQUOT, or a process that failed while its
        directory's file system is out of room (a process cannot say why it failed). A simulated task has no
        directory: its failure is its own."""
        if self.clock is not None:
            return None
        if ev.get("ev") == "error":
            return f"disk full: job {c.id}: {ev.get('msg')}" if ev.get("errno") in FULL_ERRNOS else None
        low = low_space(self.workdir(c))
        return None if low is None else f"disk full: job {c.id} exited {rc} with {low}"

    def start(self, c: Claimed, p: Placement, *, standby: bool = False) -> None:
        """Spawn the job; its exit arrives through poll(). Failures to spawn arrive as 'error' events.
        `standby`: when the next task of its node ends, in its place (standby.py)."""
        cwd = self.workdir(c)
        made = c.id in self.prepared
        if made:
            self.prepared.discard(c.id)
        sid = self._new_sid(c.id)
        try:
            argv, env = self.command(c, p)
        except Exception as e:  # a template that cannot be filled, a missing launcher: the job's error
            self.local.report_error(sid, str(e))
            self.where[c.id] = self.local
            return
        spawner = self.local if self.mode == "mpi" else self._spawner(p.nodes[0])
        if spawner is not self.local:
            # the env is the launcher's (home node's): node-specific variables must name the task's node
            for k in _NODE_VARS:
                if k in env:
                    env[k] = p.nodes[0]
        timeout = c.wall_time_min * 60 if c.wall_time_min else None
        out, err = f"{cwd}/{c.name}.out", f"{cwd}/{c.name}.err"
        if self.sim_s is not None:
            assert isinstance(spawner, SimAgent)
            spawner.spawn(sid, argv, cwd=cwd, env=env, stdout=out, stderr=err, timeout=timeout, standby=standby,
                          sim=task_of(c.data, self.sim_s))
        elif standby:
            assert isinstance(spawner, LocalSpawner | AgentClient)
            spawner.spawn(sid, argv, cwd=cwd, env=env, stdout=out, stderr=err, timeout=timeout, make_cwd=not made,
                          standby=True)
        else:
            spawner.spawn(sid, argv, cwd=cwd, env=env, stdout=out, stderr=err, timeout=timeout, make_cwd=not made)
        if isinstance(spawner, AgentClient):
            self._dirty.add(spawner)
        self.where[c.id] = spawner

    @property
    def can_stand_by(self) -> bool:
        """Whether this node's spawner takes standby tasks: real processes, serial mode, and only this node's
        tasks in it. A "local" allocation of several nodes starts all their tasks from here, and an end on one
        node would hand its core to a standby of another."""
        return isinstance(self.local, LocalSpawner) and self.mode == "serial" \
            and (self.alloc.kind != "local" or len(self.alloc.nodes) == 1)

    @property
    def agents_stand_by(self) -> bool:
        """Whether the other nodes' tasks may stand by: serial mode, each node its own agent (simulated ones
        included: the launcher's node too)."""
        return self.mode == "serial" and self.alloc.kind != "local"

    def local_tasks(self) -> int:
        """Tasks this node's spawner holds (running or starting, standbys included)."""
        return self.local.running if isinstance(self.local, LocalSpawner) else 0

    def cancel(self, job_id: int) -> bool | None:
        """Take back a standby job that has not started. True: taken back; False: it has started (see
        LocalSpawner.cancel); None: asked of its agent, whose "cancelled" event answers."""
        sid = self._sid.get(job_id)
        where = self.where.get(job_id)
        if sid is None or where is None:
            return False
        if isinstance(where, AgentClient):
            where.recall(sid)
            return None
        if not isinstance(where, LocalSpawner) or not where.cancel(sid):
            return False
        self._forget(job_id, sid)
        return True

    def _forget(self, job_id: int, sid: int) -> None:
        del self._sid[job_id], self._jid[sid]
        self.where.pop(job_id, None)

    def kill(self, job_id: int, sig: int = signal.SIGTERM) -> None:
        s = self.where.get(job_id)
        if s is not None:
            s.kill(self._sid[job_id], sig)

    def poll(self, ready: Collection[int] | None = None) -> list[Event]:
        """Events since the last call: the local spawner's, and those of the agents whose file descriptors are
        in `ready` (what epoll said; None: every agent), or of the simulated agents whose timers went off."""
        if self.clock is not None:
            evs: list[Event] = []
            for sim in self.clock.fire():
                evs += sim.poll_events()
            return self._translate(evs) if evs else evs
        evs = self.local.poll_events()
        if self.agents:
            by_fd = self._by_fd
            for fd in (list(by_fd) if ready is None else ready):
                agent = by_fd.get(fd)
                if agent is not None:
                    evs += agent.poll_events()
                    if agent.lost is not None:  # its tasks ended as errors just now; its pipe is at its end
                        del by_fd[fd]
                        self.lost += [(n, fd) for n, a in self.agents.items() if a is agent]
        return self._translate(evs) if evs else evs

    def _translate(self, evs: list[Event]) -> list[Event]:
        """Spawn ids back to job ids; an attempt that ended lets go of its spawn id."""
        out: list[Event] = []
        for ev in evs:
            raw = ev.get("id")
            sid = int(raw) if raw is not None else -1
            jid = self._jid.get(sid)
            if jid is None:
                out.append(ev)
                continue
            ev["id"] = jid  # each event is a fresh dict from its spawner
            nxt = ev.get("next")
            if nxt is not None:
                ev["next"] = self._jid.get(int(nxt), -1)
            kind = ev.get("ev")
            if kind == "cancelled" and ev.get("ok"):  # a standby its agent took back: it never ran
                self._forget(jid, sid)
            elif kind in ("exit", "error"):
                del self._jid[sid]
                if self._sid.get(jid) == sid:
                    del self._sid[jid]
                    self.where.pop(jid, None)
            out.append(ev)
        return out

    def timeout_hint(self) -> float | None:
        """How long the loop may wait: the local spawner's timers or the simulated clock. A real agent's
        events wake the loop through its pipe; its timers are its own."""
        if self.clock is not None:
            return self.clock.timeout_hint()
        return self.local.timeout_hint()

    def fds(self) -> Sequence[int]:
        """The file descriptors to wait on (simulated agents have none)."""
        return [fd for fd in (self.local.fileno(), *self._by_fd) if fd >= 0]  # a lost agent's is not watched

    def close(self, grace: float | None = None) -> list[Event]:
        self.flush()
        events = self.local.close(grace)
        for a in self.agents.values():
            events += a.close()
        return self._translate(events)
