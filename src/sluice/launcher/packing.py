"""Placement as pure data: which job goes on which nodes, cores and GPUs. No DB, no processes.

Two kinds of placement share one pool:

* *shared* (serial/ensemble mode): a single-node job takes ``ranks_per_node * threads_per_rank``
  cores and ``gpus_per_rank * ranks_per_node`` specific GPU ids of one node, first fit, so nodes
  fill one after another and whole idle nodes stay available for MPI jobs;
* *exclusive* (MPI mode, and any multi-node job): whole idle nodes, nobody else on them.

`pack` is called in the launcher's hot loop, so it is O(requests) with an early exit when the
pool is full, and a request shape that did not fit is not tried again in the same call.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sluice.launcher.nodes import Node

__all__ = ["NodePool", "Placement", "Request", "pack"]


@dataclass(frozen=True)
class Request:
    """What one job needs; ``wall_time_min=None`` means unknown (never refused for time)."""

    job_id: int
    num_nodes: int = 1
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    gpus_per_rank: int = 0
    wall_time_min: float | None = None

    @property
    def cores(self) -> int:
        """Cores needed on each node."""
        return self.ranks_per_node * self.threads_per_rank

    @property
    def gpus(self) -> int:
        """GPUs needed on each node."""
        return self.gpus_per_rank * self.ranks_per_node


@dataclass(frozen=True, eq=True)
class Placement:
    """Where a job runs; ``gpus`` maps node -> GPU ids (for CUDA_VISIBLE_DEVICES)."""

    job_id: int
    nodes: tuple[str, ...]
    cores_per_node: int
    gpus: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    exclusive: bool = False


class NodePool:
    """Free cores and free GPU ids per node."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = tuple(nodes)
        self._index = {n.name: i for i, n in enumerate(self.nodes)}
        self._free = [n.cores for n in self.nodes]
        self._gpus = [list(n.gpus) for n in self.nodes]
        self._taken = [False] * len(self.nodes)  # held by an exclusive job
        self._free_total = sum(self._free)
        self._hint = 0  # no node before this one has free cores
        self._fits: dict[tuple[int, int, int], bool] = {}

    # --- views ---
    @property
    def free_cores(self) -> int:
        return self._free_total

    @property
    def total_cores(self) -> int:
        return sum(n.cores for n in self.nodes)

    @property
    def idle_nodes(self) -> tuple[str, ...]:
        """Nodes with nothing running on them."""
        return tuple(n.name for i, n in enumerate(self.nodes) if self._idle(i))

    def _idle(self, i: int) -> bool:
        return not self._taken[i] and self._free[i] == self.nodes[i].cores

    # --- rules ---
    def fits_ever(self, req: Request) -> bool:
        """Could this request run on an empty pool? If not, the launcher must report it, not wait."""
        if req.num_nodes < 1 or req.cores < 1:
            return False
        key = (req.num_nodes, req.cores, req.gpus)  # asked once a job: a scan of 1,000 nodes each time adds up
        ok = self._fits.get(key)
        if ok is None:
            able = sum(1 for n in self.nodes if n.cores >= req.cores and len(n.gpus) >= req.gpus)
            ok = self._fits[key] = able >= req.num_nodes
        return ok

    def place(self, req: Request, *, exclusive: bool = False) -> Placement | None:
        """Take resources for ``req`` now, or return None if they are not free.

        Multi-node requests are always exclusive (whole idle nodes).
        """
        if exclusive or req.num_nodes > 1:
            return self._place_exclusive(req)
        return self._place_shared(req)

    def _place_shared(self, req: Request) -> Placement | None:
        need, ngpu = req.cores, req.gpus
        if need > self._free_total:
            return None
        free, gpus, nodes = self._free, self._gpus, self.nodes
        while self._hint < len(nodes) and free[self._hint] == 0:
            self._hint += 1
        for i in range(self._hint, len(nodes)):
            if free[i] >= need and len(gpus[i]) >= ngpu and not self._taken[i]:
                free[i] -= need
                self._free_total -= need
                name = nodes[i].name
                if ngpu:
                    ids = tuple(gpus[i][:ngpu])
                    del gpus[i][:ngpu]
                    return Placement(req.job_id, (name,), need, {name: ids})
                return Placement(req.job_id, (name,), need, {})
        return None

    def _place_exclusive(self, req: Request) -> Placement | None:
        chosen = [
            i for i, n in enumerate(self.nodes)
            if self._idle(i) and n.cores >= req.cores and len(n.gpus) >= req.gpus
        ][: req.num_nodes]
        if len(chosen) < req.num_nodes or req.num_nodes < 1:
            return None
        gpus: dict[str, tuple[str, ...]] = {}
        for i in chosen:
            self._taken[i] = True
            self._free_total -= self._free[i]
            self._free[i] = 0
            if self._gpus[i]:
                gpus[self.nodes[i].name] = tuple(self._gpus[i])
                self._gpus[i] = []
        names = tuple(self.nodes[i].name for i in chosen)
        return Placement(req.job_id, names, req.cores, gpus, exclusive=True)

    def release(self, p: Placement) -> None:
        """Give back what ``p`` took (once)."""
        for name in p.nodes:
            i = self._index[name]
            node = self.nodes[i]
            if p.exclusive:
                self._taken[i] = False
                self._free_total += node.cores - self._free[i]
                self._free[i] = node.cores
                self._gpus[i] = list(node.gpus)
            else:
                self._free[i] += p.cores_per_node
                self._free_total += p.cores_per_node
                if p.gpus:
                    back = set(self._gpus[i]) | set(p.gpus.get(name, ()))
                    self._gpus[i] = [g for g in node.gpus if g in back]
            if i < self._hint:
                self._hint = i


def _in_time(req: Request, now: float, end_time: float | None) -> bool:
    return end_time is None or req.wall_time_min is None or now + req.wall_time_min * 60 <= end_time


def pack(
    pool: NodePool,
    requests: Iterable[Request],
    *,
    mode: Literal["serial", "mpi"] = "serial",
    now: float = 0.0,
    end_time: float | None = None,
) -> list[Placement]:
    """Place as many ``requests`` as fit now; return the placements (the pool is updated).

    serial: in the given order (the launcher's priority), single-node jobs share nodes.
    mpi: largest jobs first on disjoint whole nodes, then smaller ones backfill idle nodes.
    A job that cannot finish before ``end_time`` is never placed; jobs that never fit are
    skipped silently here (use `NodePool.fits_ever` to report them).
    """
    out: list[Placement] = []
    exclusive = mode == "mpi"
    if exclusive:
        requests = sorted(requests, key=lambda r: -r.num_nodes)
    failed: set[tuple[int, int, int]] = set()
    for req in requests:
        if pool.free_cores == 0:
            break
        if not _in_time(req, now, end_time):
            continue
        shape = (req.num_nodes, req.cores, req.gpus)
        if shape in failed:
            continue
        p = pool.place(req, exclusive=exclusive)
        if p is None:
            failed.add(shape)
        else:
            out.append(p)
    return out
