"""Platform MPI launchers as pure argv builders: one small class per launcher binary.

``argv`` starts one multi-node job on a given node set; ``agent_argv`` starts ONE process on one
node (the node agent, see `sluice.launcher.agent`). Nothing here runs a process.

``env`` is the job's own variables (not the whole environment): each launcher forwards them its
way (``-genv``, ``-x``, ``-e``, ``-E``). srun has no per-variable flag that survives commas in
values, so `SrunExec` uses ``--export=ALL`` and the caller must also set ``env`` on the srun
process itself. Threads and GPUs are expressed where the launcher has a flag for them; otherwise
the runner sets OMP_NUM_THREADS / CUDA_VISIBLE_DEVICES.
"""
from __future__ import annotations

import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

from sluice.launcher.nodes import Allocation

__all__ = ["AprunExec", "JsrunExec", "LauncherNotFound", "MPICHExec", "MPILauncher", "OpenMPIExec",
           "SrunExec", "choose", "for_allocation"]

log = logging.getLogger("sluice.launcher")


class LauncherNotFound(RuntimeError):
    """No usable MPI launcher binary; the message names what was looked for."""


class MPILauncher(ABC):
    """Builds command lines for one launcher binary."""

    name: ClassVar[str]
    default_binary: ClassVar[str]

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or self.default_binary

    @abstractmethod
    def argv(self, cmd: list[str], nodes: Sequence[str], ranks_per_node: int, threads_per_rank: int,
             gpus_per_rank: int, env: Mapping[str, str]) -> list[str]:
        """The full command line running ``cmd`` as ``len(nodes) * ranks_per_node`` ranks."""

    @abstractmethod
    def agent_argv(self, node: str, cmd: list[str]) -> list[str]:
        """The command line starting one process (the node agent) on ``node``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.binary!r})"


class MPICHExec(MPILauncher):
    """MPICH's Hydra (also Cray PALS ``mpiexec`` on Polaris/Aurora, which takes the same flags)."""

    name = "mpich"
    default_binary = "mpiexec.mpich"

    def argv(self, cmd: list[str], nodes: Sequence[str], ranks_per_node: int, threads_per_rank: int,
             gpus_per_rank: int, env: Mapping[str, str]) -> list[str]:
        out = [self.binary, "-n", str(len(nodes) * ranks_per_node), "-ppn", str(ranks_per_node),
               "-hosts", ",".join(nodes)]
        for k, v in env.items():
            out += ["-genv", k, v]
        return out + list(cmd)

    def agent_argv(self, node: str, cmd: list[str]) -> list[str]:
        return [self.binary, "-n", "1", "-hosts", node, *cmd]


class OpenMPIExec(MPILauncher):
    """Open MPI's mpiexec; adds --allow-run-as-root when run as root (containers, CI)."""

    name = "openmpi"
    default_binary = "mpiexec.openmpi"

    def __init__(self, binary: str | None = None, *, allow_root: bool | None = None) -> None:
        super().__init__(binary)
        self.allow_root = os.geteuid() == 0 if allow_root is None else allow_root

    def _base(self) -> list[str]:
        return [self.binary, "--allow-run-as-root"] if self.allow_root else [self.binary]

    def argv(self, cmd: list[str], nodes: Sequence[str], ranks_per_node: int, threads_per_rank: int,
             gpus_per_rank: int, env: Mapping[str, str]) -> list[str]:
        out = self._base() + ["--host", ",".join(f"{n}:{ranks_per_node}" for n in nodes),
                              "-n", str(len(nodes) * ranks_per_node)]
        for k, v in env.items():
            out += ["-x", f"{k}={v}"]
        return out + list(cmd)

    def agent_argv(self, node: str, cmd: list[str]) -> list[str]:
        return self._base() + ["--host", node, "-n", "1", *cmd]


class SrunExec(MPILauncher):
    """Slurm's srun inside an allocation; ``--overlap`` lets job steps share the agent's nodes.

    ``mpi`` is the PMI plugin (``pmi2`` for MPICH, ``pmix`` for Open MPI, None for the site default).
    """

    name = "srun"
    default_binary = "srun"

    def __init__(self, binary: str | None = None, *, mpi: str | None = "pmi2") -> None:
        super().__init__(binary)
        self.mpi = mpi

    def argv(self, cmd: list[str], nodes: Sequence[str], ranks_per_node: int, threads_per_rank: int,
             gpus_per_rank: int, env: Mapping[str, str]) -> list[str]:
        out = [self.binary, "-N", str(len(nodes)), "-n", str(len(nodes) * ranks_per_node),
               "--ntasks-per-node", str(ranks_per_node), "-w", ",".join(nodes),
               "--cpus-per-task", str(threads_per_rank), "--overlap", "--export=ALL"]
        if gpus_per_rank:
            out += ["--gpus-per-task", str(gpus_per_rank)]
        if self.mpi:
            out.append(f"--mpi={self.mpi}")
        return out + list(cmd)

    def agent_argv(self, node: str, cmd: list[str]) -> list[str]:
        return [self.binary, "-N1", "-n1", "-w", node, "--overlap", "--export=ALL", *cmd]


class AprunExec(MPILauncher):
    """Cray ALPS aprun (Theta): ``-L`` takes node ids, ``-d`` threads (cores) per rank."""

    name = "aprun"
    default_binary = "aprun"

    def argv(self, cmd: list[str], nodes: Sequence[str], ranks_per_node: int, threads_per_rank: int,
             gpus_per_rank: int, env: Mapping[str, str]) -> list[str]:
        out = [self.binary, "-n", str(len(nodes) * ranks_per_node), "-N", str(ranks_per_node),
               "-d", str(threads_per_rank), "-L", ",".join(nodes)]
        for k, v in env.items():
            out += ["-e", f"{k}={v}"]
        return out + list(cmd)

    def agent_argv(self, node: str, cmd: list[str]) -> list[str]:
        return [self.binary, "-n", "1", "-N", "1", "-L", node, *cmd]


class JsrunExec(MPILauncher):
    """IBM jsrun (Summit): one resource set per rank, ``ranks_per_node`` sets per host.

    jsrun has no plain host list: it picks hosts from the allocation itself, so ``nodes`` only
    sets the count here. Exact placement needs an ERF file (not done).
    """

    name = "jsrun"
    default_binary = "jsrun"

    def argv(self, cmd: list[str], nodes: Sequence[str], ranks_per_node: int, threads_per_rank: int,
             gpus_per_rank: int, env: Mapping[str, str]) -> list[str]:
        out = [self.binary, "-n", str(len(nodes) * ranks_per_node), "-r", str(ranks_per_node),
               "-a", "1", "-c", str(threads_per_rank), "-g", str(gpus_per_rank)]
        for k, v in env.items():
            out += ["-E", f"{k}={v}"]
        return out + list(cmd)

    def agent_argv(self, node: str, cmd: list[str]) -> list[str]:
        return [self.binary, "-n", "1", "-r", "1", "-a", "1", "-c", "ALL_CPUS", "-g", "ALL_GPUS", *cmd]


_BY_NAME: dict[str, tuple[type[MPILauncher], tuple[str, ...]]] = {
    "srun": (SrunExec, ("srun",)),
    "mpich": (MPICHExec, ("mpiexec.mpich", "mpiexec.hydra")),
    "openmpi": (OpenMPIExec, ("mpiexec.openmpi",)),
    "aprun": (AprunExec, ("aprun",)),
    "jsrun": (JsrunExec, ("jsrun",)),
}
# allocation kind -> launchers to try, in order
_BY_KIND: dict[str, tuple[str, ...]] = {
    "slurm": ("srun",),
    "cobalt": ("aprun", "mpich", "openmpi"),
    "lsf": ("jsrun", "mpich", "openmpi"),
    "pbs": ("mpich", "openmpi"),
    "local": ("mpich", "openmpi"),
}


def choose(kind: str, env: Mapping[str, str] | None = None,
           which: Callable[[str], str | None] = shutil.which) -> MPILauncher:
    """The launcher for an allocation ``kind``, or the one named by ``kind`` (``srun``, ``mpich``...).

    Inside Slurm (``SLURM_JOB_ID`` set) srun wins. Otherwise MPICH's mpiexec, then Open MPI's; a
    plain ``mpiexec`` is taken as MPICH-flavoured (Cray PALS) when nothing more specific exists.
    Raises LauncherNotFound naming the binaries it looked for.
    """
    env = os.environ if env is None else env
    if kind in _BY_NAME:
        names: tuple[str, ...] = (kind,)
    elif kind in _BY_KIND:
        names = ("srun",) if env.get("SLURM_JOB_ID") else _BY_KIND[kind]
    else:
        raise ValueError(f"unknown allocation kind or launcher {kind!r}; "
                         f"expected one of {sorted({*_BY_KIND, *_BY_NAME})}")
    tried: list[str] = []
    for name in names:
        cls, binaries = _BY_NAME[name]
        for b in binaries:
            tried.append(b)
            if which(b):
                return cls(b)
    if kind not in _BY_NAME and "mpich" in names:
        tried.append("mpiexec")
        if which("mpiexec"):
            return MPICHExec("mpiexec")
    raise LauncherNotFound(f"no MPI launcher for {kind!r}: none of {', '.join(tried)} is on PATH")


def for_allocation(alloc: Allocation, job_mode: str, name: str | None = None) -> MPILauncher | None:
    """The MPI launcher a launcher in `job_mode` on `alloc` uses (`name` forces one): required in mpi mode and
    for node agents on a multi-node allocation (LauncherNotFound), else None when there is none."""
    need = job_mode == "mpi" or (alloc.kind != "local" and len(alloc.nodes) > 1)
    try:
        return choose(name or alloc.kind)
    except (LauncherNotFound, ValueError) as e:
        if need:
            raise
        log.debug("no MPI launcher: %s", e)
        return None
