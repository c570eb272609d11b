"""Placement as pure data: which job goes on which nodes, cores and GPUs. No DB, no processes.

Two kinds of placement share one pool:

* *shared* (serial/ensemble mode): a single-node job takes ``ranks_per_node * threads_per_rank``
  cores and ``gpus_per_rank * ranks_per_node`` specific GPU ids of one node, first fit, so nodes
  fill one after another and whole idle nodes stay available for MPI jobs;
* *exclusive* (MPI mode, and any multi-node job): whole idle nodes, nobody else on them.

`pack` is called in the launcher's hot loop, so it is O(requests) with an early exit when the
pool is full, and a request shape that did not fit is not tried again in the same call; one placement costs
O(log nodes), not a scan of the nodes (1,024 of them at 64 cores: 65,536 slots).
"""
from __future__ import annotations

import heapq
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


@dataclass(slots=True)
class Placement:
    """Where a job runs; ``gpus`` maps node -> GPU ids (for CUDA_VISIBLE_DEVICES)."""

    job_id: int
    nodes: tuple[str, ...]
    cores_per_node: int
    gpus: dict[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    exclusive: bool = False


class NodePool:
    """Free cores and free GPU ids per node, with free-slot structures so that no placement scans every node.

    Shared placement is best fit: the node with the fewest free cores that still fit, the lowest-numbered of
    those, found through one heap of nodes per count of free cores and a bit mask of the counts that have
    nodes (fill order stays node after node, and whole idle nodes stay free for MPI jobs). Exclusive
    placement takes the lowest-numbered idle nodes from a heap of them, and says at once, from an exact count,
    when not enough are idle. Heap entries are checked when they surface (a node's count may have moved on
    since) and the heaps are rebuilt when stale entries outnumber the nodes several times over. A request for
    GPUs still scans the nodes (first fit), as GPU ids must be matched too.
    """

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = tuple(nodes)
        self.names = tuple(n.name for n in self.nodes)
        self._index = {n.name: i for i, n in enumerate(self.nodes)}
        self._cores = [n.cores for n in self.nodes]
        self._free = list(self._cores)
        self._gpus = [list(n.gpus) for n in self.nodes]
        self._taken = [False] * len(self.nodes)  # held by an exclusive job (or lost: retire)
        self._lost = [False] * len(self.nodes)
        self._free_total = sum(self._free)
        self._total = self._free_total
        self._hint = 0  # no node before this one has free cores (the GPU scan starts here)
        self._fits: dict[tuple[int, int, int], bool] = {}
        self._max = max(self._cores, default=0)
        self._n_idle = len(self.nodes)
        self._rebuild()

    def _rebuild(self) -> None:
        """The heaps from the nodes' state, without stale entries."""
        self._heaps: list[list[int]] = [[] for _ in range(self._max + 1)]  # free count -> nodes (a heap)
        self._mask = 0  # bit k: heap k has entries
        self._idle: list[int] = []
        for i in range(len(self.nodes)):
            k = self._free[i]
            if k > 0 and not self._taken[i]:
                self._heaps[k].append(i)
                self._mask |= 1 << k
            if self._idle_at(i):
                self._idle.append(i)  # ascending: already a heap
        self._entries = 2 * len(self.nodes)
        self._limit = 8 * len(self.nodes) + 1024

    def _push(self, k: int, i: int) -> None:
        """Node `i` has `k` free cores now (k == 0: it went idle, for the idle heap)."""
        if k:
            heapq.heappush(self._heaps[k], i)
            self._mask |= 1 << k
        else:
            heapq.heappush(self._idle, i)
        self._entries += 1
        if self._entries > self._limit:
            self._rebuild()

    # --- views ---
    @property
    def free_cores(self) -> int:
        return self._free_total

    @property
    def total_cores(self) -> int:
        return self._total

    @property
    def idle_count(self) -> int:
        """How many nodes have nothing running on them."""
        return self._n_idle

    @property
    def idle_nodes(self) -> tuple[str, ...]:
        """Nodes with nothing running on them."""
        return tuple(n.name for i, n in enumerate(self.nodes) if self._idle_at(i))

    def _idle_at(self, i: int) -> bool:
        return not self._taken[i] and self._free[i] == self._cores[i]

    # --- rules ---
    def fits_ever(self, req: Request) -> bool:
        """Could this request run on an empty pool? If not, the launcher must report it, not wait."""
        return self.fits_shape(req.num_nodes, req.cores, req.gpus)

    def fits_shape(self, num_nodes: int, cores: int, gpus: int) -> bool:
        """fits_ever() of a request of this shape (cores and GPUs per node)."""
        key = (num_nodes, cores, gpus)  # asked once a job: a scan of 1,000 nodes each time adds up
        ok = self._fits.get(key)
        if ok is None:
            able = sum(1 for i, n in enumerate(self.nodes)
                       if n.cores >= cores and len(n.gpus) >= gpus and not self._lost[i])
            ok = self._fits[key] = num_nodes >= 1 and cores >= 1 and able >= num_nodes
        return ok

    def place(self, req: Request, *, exclusive: bool = False) -> Placement | None:
        """Take resources for ``req`` now, or return None if they are not free.

        Multi-node requests are always exclusive (whole idle nodes).
        """
        if exclusive or req.num_nodes > 1:
            return self._place_exclusive(req)
        if req.gpus:
            return self._place_gpus(req)
        need = req.cores
        i = self.take_cores(need)
        return None if i is None else Placement(req.job_id, (self.nodes[i].name,), need, {})

    def index(self, name: str) -> int | None:
        """The index of the node called `name` (None: not in this pool)."""
        return self._index.get(name)

    def total_at(self, i: int) -> int:
        """Cores of node `i`."""
        return self._cores[i]

    def free_at(self, i: int) -> int:
        """Free cores of node `i` (none while an exclusive job holds it)."""
        return 0 if self._taken[i] else self._free[i]

    def take_at(self, i: int, need: int) -> bool:
        """Take `need` cores of node `i` (a standby task takes the cores its predecessor left): False if
        they are not free. The node's old heap entry goes stale and is skipped when it surfaces."""
        f = self._free[i]
        if self._taken[i] or need < 1 or f < need:
            return False
        if f == self._cores[i]:
            self._n_idle -= 1
        left = self._free[i] = f - need
        self._free_total -= need
        if left:
            self._push(left, i)
        return True

    def retire(self, i: int) -> None:
        """Node `i` is gone (its agent died, with it or not): nothing is placed there again, what ran there
        gives nothing back, and a shape only it could hold never fits."""
        if self._lost[i]:
            return
        if self._idle_at(i):
            self._n_idle -= 1
        self._free_total -= self.free_at(i)
        self._total -= self._cores[i]
        self._lost[i] = self._taken[i] = True
        self._free[i] = 0
        self._gpus[i] = []
        self._fits.clear()

    def retired(self, i: int) -> bool:
        return self._lost[i]

    def take_cores(self, need: int) -> int | None:
        """Take `need` cores of one node, best fit (see the class); the node's index, or None."""
        if need > self._free_total or need < 1:
            return None
        heaps, free, taken = self._heaps, self._free, self._taken
        while True:
            m = self._mask >> need
            if not m:
                return None
            k = need + (m & -m).bit_length() - 1
            h = heaps[k]
            while h:
                i = heapq.heappop(h)
                self._entries -= 1
                if free[i] == k and not taken[i]:
                    if not h:
                        self._mask &= ~(1 << k)
                    if k == self._cores[i]:
                        self._n_idle -= 1
                    left = free[i] = k - need
                    self._free_total -= need
                    if left:
                        self._push(left, i)
                    return i
            self._mask &= ~(1 << k)  # only stale entries were left

    def _place_gpus(self, req: Request) -> Placement | None:
        need, ngpu = req.cores, req.gpus
        if need > self._free_total:
            return None
        free, gpus, nodes = self._free, self._gpus, self.nodes
        while self._hint < len(nodes) and free[self._hint] == 0:
            self._hint += 1
        for i in range(self._hint, len(nodes)):
            if free[i] >= need and len(gpus[i]) >= ngpu and not self._taken[i]:
                if free[i] == self._cores[i]:
                    self._n_idle -= 1
                free[i] -= need
                self._free_total -= need
                if free[i]:
                    self._push(free[i], i)
                name = nodes[i].name
                ids = tuple(gpus[i][:ngpu])
                del gpus[i][:ngpu]
                return Placement(req.job_id, (name,), need, {name: ids})
        return None

    def _place_exclusive(self, req: Request) -> Placement | None:
        want = req.num_nodes
        if want < 1 or want > self._n_idle:
            return None
        chosen: list[int] = []
        seen: set[int] = set()
        unfit: list[int] = []  # idle, but too small for this request
        idle = self._idle
        while idle and len(chosen) < want:
            i = heapq.heappop(idle)
            self._entries -= 1
            if i in seen or not self._idle_at(i):
                continue  # a duplicate, or a node busy since it was pushed
            seen.add(i)
            if self._cores[i] >= req.cores and len(self.nodes[i].gpus) >= req.gpus:
                chosen.append(i)
            else:
                unfit.append(i)
        for i in unfit:
            heapq.heappush(idle, i)
        self._entries += len(unfit)
        if len(chosen) < want:
            for i in chosen:
                heapq.heappush(idle, i)
            self._entries += len(chosen)
            return None
        gpus: dict[str, tuple[str, ...]] = {}
        for i in chosen:
            self._taken[i] = True
            self._free_total -= self._free[i]
            self._free[i] = 0
            if self._gpus[i]:
                gpus[self.nodes[i].name] = tuple(self._gpus[i])
                self._gpus[i] = []
        self._n_idle -= want
        names = tuple(self.nodes[i].name for i in chosen)
        return Placement(req.job_id, names, req.cores, gpus, exclusive=True)

    def release(self, p: Placement) -> None:
        """Give back what ``p`` took (once)."""
        for name in p.nodes:
            i = self._index[name]
            self.release_at(i, p.cores_per_node, p.exclusive, p.gpus.get(name) if p.gpus else None)

    def release_at(self, i: int, cores: int, exclusive: bool = False, gpu_ids: Sequence[str] | None = None) -> None:
        """Give back `cores` of node `i` (all of it for an exclusive hold) and its GPU ids."""
        if self._lost[i]:
            return
        node = self.nodes[i]
        if exclusive:
            self._taken[i] = False
            self._free_total += node.cores - self._free[i]
            self._free[i] = node.cores
            self._gpus[i] = list(node.gpus)
        else:
            self._free[i] += cores
            self._free_total += cores
            if gpu_ids:
                back = set(self._gpus[i]) | set(gpu_ids)
                self._gpus[i] = [g for g in node.gpus if g in back]
        k = self._free[i]
        if k == node.cores:
            self._n_idle += 1
            self._push(0, i)
        self._push(k, i)
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
