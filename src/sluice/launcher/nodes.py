"""Allocation discovery: which nodes, cores and GPUs this launcher owns, and until when.

Everything is read from the scheduler's environment (passed in as a mapping so tests need no
real scheduler). Only the end time needs a command (`squeue`, `qstat`); a failing command
gives ``end_time=None`` rather than an error, because a launcher without an end time still works.

Overrides, in order of strength:

* ``SLUICE_ALLOCATION_END`` (epoch seconds) beats every other source of the end time
  (the local pseudo-scheduler sets it);
* ``SLUICE_CORES_PER_NODE`` / ``SLUICE_GPUS_PER_NODE`` replace what the scheduler says about
  each node (Cobalt and LSF do not say much; login nodes differ from compute nodes);
* ``wall_time_min`` gives ``now + wall`` only when the scheduler gave no end time.
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sluice import environ

__all__ = ["Allocation", "Node", "discover", "expand_hostlist", "expand_cpus_per_node", "expand_ranges"]


@dataclass(frozen=True)
class Node:
    """One compute node; GPU ids are strings so they go straight into CUDA_VISIBLE_DEVICES."""

    name: str
    cores: int
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Allocation:
    """The nodes of one batch job (or of this machine, kind ``local``)."""

    kind: str
    nodes: tuple[Node, ...]
    end_time: float | None
    batch_id: str | None

    def deadline(self, margin_s: float | None, start: float) -> float | None:
        """When to stop starting and running jobs: the end, less `margin_s` (default: a tenth of the time left
        at `start`, between 1 s and 2 min). None: the allocation does not end."""
        if self.end_time is None:
            return None
        margin = margin_s if margin_s is not None else min(120.0, max(1.0, 0.1 * (self.end_time - start)))
        return self.end_time - margin


Runner = Callable[[list[str]], "str | None"]


def _run(argv: list[str]) -> str | None:
    """Run a query command; its stdout, or None if it is missing, fails or hangs."""
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


# --- hostlists ---------------------------------------------------------------------------------

def _split_top(s: str) -> list[str]:
    """Split on commas that are outside brackets."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def expand_ranges(spec: str) -> list[str]:
    """``"1-3,07-08"`` -> ``["1","2","3","07","08"]``; zero-padding follows the lower bound."""
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
            if int(hi) < int(lo):
                raise ValueError(f"bad range {part!r}")
            out.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
        else:
            out.append(part)
    return out


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a Slurm hostlist, e.g. ``n[1-3,7],gpu[01-02]`` or ``r[1-2]n[1-2]`` (cartesian)."""
    hosts: list[str] = []
    for item in _split_top(hostlist):
        pieces = re.split(r"(\[[^\]]*\])", item)
        choices = [expand_ranges(p[1:-1]) if p.startswith("[") else [p] for p in pieces if p]
        if any("[" in p or "]" in p for c in choices for p in c):
            raise ValueError(f"unbalanced brackets in hostlist {hostlist!r}")
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def expand_cpus_per_node(spec: str) -> list[int]:
    """Slurm's ``2(x3),4`` -> ``[2, 2, 2, 4]``."""
    out: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not m:
            raise ValueError(f"bad cpus-per-node spec {spec!r}")
        out.extend([int(m.group(1))] * int(m.group(2) or 1))
    return out


# --- per scheduler ------------------------------------------------------------------------------

def _gpu_ids(value: str | None) -> tuple[str, ...]:
    if not value or value.strip().lower() in ("", "nodevfiles", "none", "nodevs"):
        return ()
    return tuple(g.strip() for g in value.split(",") if g.strip())


def _slurm(env: Mapping[str, str], run: Runner) -> Allocation:
    jobid = env["SLURM_JOB_ID"]
    names = expand_hostlist(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", ""))
    if "SLURM_JOB_CPUS_PER_NODE" in env:
        cores = expand_cpus_per_node(env["SLURM_JOB_CPUS_PER_NODE"])
    else:
        cores = [int(env.get("SLURM_CPUS_ON_NODE") or os.cpu_count() or 1)] * len(names)
    if len(cores) < len(names):
        cores += [cores[-1] if cores else (os.cpu_count() or 1)] * (len(names) - len(cores))
    gpus = _gpu_ids(env.get("SLURM_JOB_GPUS") or env.get("SLURM_STEP_GPUS"))
    nodes = tuple(Node(n, c, gpus) for n, c in zip(names, cores, strict=False))
    out = run(["squeue", "-h", "-j", jobid, "-o", "%e"])
    return Allocation("slurm", nodes, parse_slurm_time(out or ""), jobid)


def parse_slurm_time(text: str) -> float | None:
    """``2026-11-25T13:45:00`` (local time, as squeue prints it) -> epoch; None if not a time."""
    text = text.strip().splitlines()[0].strip() if text.strip() else ""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def _hms(text: str) -> float:
    secs = 0.0
    for part in text.strip().split(":"):
        secs = secs * 60 + float(part)
    return secs


def parse_qstat_end(text: str, now: float) -> float | None:
    """End time from ``qstat -f``: now + (requested walltime - used walltime); None if absent."""
    fields = dict(
        (k.strip(), v.strip()) for k, _, v in (ln.partition("=") for ln in text.splitlines()) if _
    )
    wall = fields.get("Resource_List.walltime")
    if not wall:
        return None
    used = fields.get("resources_used.walltime", "0")
    try:
        return now + _hms(wall) - _hms(used)
    except ValueError:
        return None


def _pbs(env: Mapping[str, str], run: Runner, now: float) -> Allocation:
    with open(env["PBS_NODEFILE"]) as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    counts: dict[str, int] = {}
    for host in lines:
        counts[host] = counts.get(host, 0) + 1
    ncpus = env.get("NCPUS")
    nodes = tuple(Node(h, int(ncpus) if ncpus else c) for h, c in counts.items())
    jobid = env.get("PBS_JOBID")
    out = run(["qstat", "-f", jobid]) if jobid else None
    return Allocation("pbs", nodes, parse_qstat_end(out, now) if out else None, jobid)


def _cobalt(env: Mapping[str, str]) -> Allocation:
    """Cobalt names nodes by their number (Theta's nids), which is what ``aprun -L`` takes."""
    if env.get("COBALT_PARTNAME"):
        names = expand_ranges(env["COBALT_PARTNAME"])
    else:
        names = [str(i) for i in range(int(env.get("COBALT_JOBSIZE", "1")))]
    cores = os.cpu_count() or 1
    end = float(env["COBALT_ENDTIME"]) if env.get("COBALT_ENDTIME") else None
    return Allocation("cobalt", tuple(Node(n, cores) for n in names), end, env.get("COBALT_JOBID"))


def _lsf(env: Mapping[str, str]) -> Allocation:
    """Slots per host from LSB_DJOB_HOSTFILE / LSB_HOSTS (one line or word per slot).

    On Summit-like systems the first host of LSB_MCPU_HOSTS is the batch (launch) node with a
    single slot while compute hosts have many: only in that case is the first host dropped.
    """
    if env.get("LSB_DJOB_HOSTFILE") and os.path.exists(env["LSB_DJOB_HOSTFILE"]):
        with open(env["LSB_DJOB_HOSTFILE"]) as f:
            slots = [ln.strip() for ln in f if ln.strip()]
    else:
        slots = env.get("LSB_HOSTS", "").split()
    counts: dict[str, int] = {}
    for host in slots:
        counts[host] = counts.get(host, 0) + 1
    mcpu = env.get("LSB_MCPU_HOSTS", "").split()
    pairs = [(mcpu[i], int(mcpu[i + 1])) for i in range(0, len(mcpu) - 1, 2)]
    if len(pairs) > 1 and pairs[0][1] == 1 and all(n > 1 for _, n in pairs[1:]):
        counts.pop(pairs[0][0], None)
    nodes = tuple(Node(h, c) for h, c in counts.items())
    return Allocation("lsf", nodes, None, env.get("LSB_JOBID"))


def _local_gpus(env: Mapping[str, str], run: Runner) -> tuple[str, ...]:
    if "CUDA_VISIBLE_DEVICES" in env:
        return _gpu_ids(env["CUDA_VISIBLE_DEVICES"])
    if shutil.which("nvidia-smi") is None:
        return ()
    out = run(["nvidia-smi", "-L"]) or ""
    return tuple(str(i) for i, ln in enumerate(ln for ln in out.splitlines() if ln.startswith("GPU ")))


def _local(env: Mapping[str, str], run: Runner) -> Allocation:
    name = env.get("SLURMD_NODENAME") or socket.gethostname()
    node = Node(name, os.cpu_count() or 1, _local_gpus(env, run))
    return Allocation("local", (node,), None, None)


def _apply_overrides(alloc: Allocation, env: Mapping[str, str]) -> Allocation:
    cores, gpus = env.get(environ.CORES_PER_NODE), env.get(environ.GPUS_PER_NODE)
    if not cores and not gpus:
        return alloc
    nodes = tuple(
        Node(n.name, int(cores) if cores else n.cores,
             tuple(str(i) for i in range(int(gpus))) if gpus else n.gpus)
        for n in alloc.nodes
    )
    return Allocation(alloc.kind, nodes, alloc.end_time, alloc.batch_id)


def discover(
    env: Mapping[str, str] | None = None,
    *,
    wall_time_min: float | None = None,
    run: Runner = _run,
    now: float | None = None,
) -> Allocation:
    """Find the allocation we run in: Slurm, PBS, Cobalt, LSF, else this machine alone.

    ``run`` executes query commands (injectable for tests); ``now`` defaults to time.time().
    """
    env = os.environ if env is None else env
    now = time.time() if now is None else now
    if env.get("SLURM_JOB_ID") and (env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")):
        alloc = _slurm(env, run)
    elif env.get("PBS_NODEFILE"):
        alloc = _pbs(env, run, now)
    elif env.get("COBALT_JOBID") or env.get("COBALT_PARTNAME"):
        alloc = _cobalt(env)
    elif env.get("LSB_JOBID") and (env.get("LSB_DJOB_HOSTFILE") or env.get("LSB_HOSTS")):
        alloc = _lsf(env)
    else:
        alloc = _local(env, run)
    alloc = _apply_overrides(alloc, env)
    end = alloc.end_time
    if env.get(environ.ALLOCATION_END):
        end = float(env[environ.ALLOCATION_END])
    elif end is None and wall_time_min is not None:
        end = now + wall_time_min * 60
    return Allocation(alloc.kind, alloc.nodes, end, alloc.batch_id)
