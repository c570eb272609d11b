"""Placement rules: no overlap, exclusivity, largest first, backfill, wall-time guard, speed."""
from __future__ import annotations

import time
from collections import Counter

from sluice.launcher.nodes import Node
from sluice.launcher.packing import NodePool, Placement, Request, pack


def nodes(n: int, cores: int = 4, gpus: int = 0) -> list[Node]:
    return [Node(f"n{i + 1}", cores, tuple(str(g) for g in range(gpus))) for i in range(n)]


def reqs(n: int, start: int = 0, **kw: int | float | None) -> list[Request]:
    return [Request(start + i, **kw) for i in range(n)]  # type: ignore[arg-type]


def test_serial_packs_by_cores_without_overlap() -> None:
    pool = NodePool(nodes(2, cores=4))
    ps = pack(pool, reqs(10, ranks_per_node=1, threads_per_rank=1))
    assert len(ps) == 8
    assert Counter(p.nodes[0] for p in ps) == {"n1": 4, "n2": 4}
    assert pool.free_cores == 0 and pool.total_cores == 8
    pool.release(ps[0])
    assert pool.free_cores == 1
    again = pack(pool, reqs(3, start=100))
    assert [p.nodes for p in again] == [ps[0].nodes]


def test_serial_multi_core_jobs_fill_first_node_first() -> None:
    pool = NodePool(nodes(2, cores=8))
    ps = pack(pool, [Request(1, ranks_per_node=2, threads_per_rank=2), Request(2, ranks_per_node=3),
                     Request(3, ranks_per_node=2)])
    assert [(p.nodes, p.cores_per_node) for p in ps] == [(("n1",), 4), (("n1",), 3), (("n2",), 2)]
    assert pool.idle_nodes == ()


def test_gpu_ids_disjoint_and_returned() -> None:
    pool = NodePool(nodes(2, cores=8, gpus=4))
    ps = pack(pool, reqs(6, gpus_per_rank=1, ranks_per_node=1) + [Request(99, gpus_per_rank=2)])
    gpus = [(p.nodes[0], g) for p in ps for g in p.gpus[p.nodes[0]]]
    assert len(gpus) == len(set(gpus)) == 8
    assert ps[-1].job_id == 99 and ps[-1].gpus == {"n2": ("2", "3")}
    assert pack(pool, [Request(100, gpus_per_rank=1)]) == []  # cores left, no GPUs
    pool.release(ps[1])
    p = pool.place(Request(101, gpus_per_rank=1))
    assert p is not None and p.gpus == {"n1": ("1",)}


def test_mpi_mode_is_exclusive_and_largest_first() -> None:
    pool = NodePool(nodes(4, cores=4, gpus=2))
    ps = pack(pool, [Request(1, num_nodes=1), Request(2, num_nodes=3), Request(3, num_nodes=2)], mode="mpi")
    assert [p.job_id for p in ps] == [2, 1]  # the 3-node job first, the 1-node job backfills
    assert all(p.exclusive for p in ps)
    used = [n for p in ps for n in p.nodes]
    assert len(used) == len(set(used)) == 4
    assert ps[0].gpus == {n: ("0", "1") for n in ps[0].nodes}
    assert pool.free_cores == 0 and pool.idle_nodes == ()
    assert pool.place(Request(9)) is None  # nothing can share an MPI node
    pool.release(ps[0])
    assert len(pool.idle_nodes) == 3
    p = pool.place(Request(3, num_nodes=2), exclusive=True)
    assert p is not None and set(p.nodes) <= set(ps[0].nodes)


def test_mpi_backfills_small_jobs_when_big_one_does_not_fit() -> None:
    pool = NodePool(nodes(4))
    first = pack(pool, [Request(1, num_nodes=2)], mode="mpi")
    ps = pack(pool, [Request(2, num_nodes=3), Request(3, num_nodes=1), Request(4, num_nodes=1),
                     Request(5, num_nodes=1)], mode="mpi")
    assert [p.job_id for p in ps] == [3, 4]
    assert not set(first[0].nodes) & {n for p in ps for n in p.nodes}


def test_multi_node_job_never_shares_with_serial_jobs() -> None:
    pool = NodePool(nodes(3))
    pack(pool, [Request(1)])  # n1 is busy with one core
    p = pool.place(Request(2, num_nodes=2))
    assert p is not None and p.nodes == ("n2", "n3")
    assert pool.place(Request(3, num_nodes=1, ranks_per_node=4)) is None


def test_wall_time_guard() -> None:
    pool = NodePool(nodes(1))
    ps = pack(pool, [Request(1, wall_time_min=10), Request(2, wall_time_min=5), Request(3, wall_time_min=None)],
              now=1000.0, end_time=1000.0 + 6 * 60)
    assert [p.job_id for p in ps] == [2, 3]
    ps = pack(NodePool(nodes(1)), [Request(1, wall_time_min=10)], now=0.0, end_time=None)
    assert len(ps) == 1


def test_fits_ever() -> None:
    pool = NodePool(nodes(4, cores=4, gpus=1))
    assert not pool.fits_ever(Request(1, num_nodes=5))
    assert pool.fits_ever(Request(1, num_nodes=4))
    assert not pool.fits_ever(Request(1, ranks_per_node=5))
    assert not pool.fits_ever(Request(1, gpus_per_rank=2))
    pack(pool, reqs(16))
    assert pool.fits_ever(Request(1, num_nodes=4))  # ignores what runs now


def test_release_restores_everything() -> None:
    ns = nodes(2, cores=4, gpus=2)
    pool = NodePool(ns)
    ps = pack(pool, [Request(1, gpus_per_rank=1), Request(2, ranks_per_node=3), Request(3, num_nodes=1)])
    ps += [p for p in [pool.place(Request(4, num_nodes=1), exclusive=True)] if p]
    for p in ps:
        pool.release(p)
    assert pool.free_cores == 8 and pool.idle_nodes == ("n1", "n2")
    assert pool.place(Request(5, num_nodes=2, gpus_per_rank=2)) == Placement(
        5, ("n1", "n2"), 1, {"n1": ("0", "1"), "n2": ("0", "1")}, exclusive=True)


def test_pack_does_not_scan_the_whole_backlog_in_the_hot_loop() -> None:
    """A guard against a quadratic pack (the figures are bench/'s): the median call over a 10,000-job backlog
    stays far below what scanning it all each time would cost, even on a loaded machine."""
    backlog = reqs(10_000)
    pool = NodePool(nodes(2, cores=64))
    took: list[float] = []
    running: list[Placement] = []
    for start in range(0, 10_000, 300):
        for p in running[:32]:
            pool.release(p)
        running = running[32:]
        t = time.perf_counter()
        running += pack(pool, backlog[start:start + 300], now=0.0, end_time=1e9)
        took.append(time.perf_counter() - t)
    took.sort()
    assert took[len(took) // 2] < 0.02, f"median pack call took {took[len(took) // 2] * 1e3:.2f} ms"


def test_a_retired_node_takes_nothing_gives_nothing_back_and_fits_nothing() -> None:
    """A node lost with its agent: its cores leave the totals, a placement that held some of them gives none
    back when its task's end comes as an error, and a shape only it could hold never fits again."""
    pool = NodePool([Node("a", 2), Node("big", 8), Node("c", 2)])
    i = pool.index("big")
    assert i is not None
    p = pool.place(Request(1, 1, 6, 1))  # 6 cores: only "big" holds them
    assert p is not None and p.nodes == ("big",)
    pool.retire(i)
    assert pool.retired(i) and pool.total_cores == 4 and pool.free_cores == 4 and pool.free_at(i) == 0
    pool.release(p)
    assert pool.free_cores == 4 and pool.free_at(i) == 0
    assert not pool.fits_shape(1, 6, 0) and pool.fits_shape(1, 2, 0)
    got = [pool.take_cores(1) for _ in range(5)]
    assert i not in got and got[-1] is None  # four cores on a and c, then none
    assert pool.place(Request(2, 3, 1, 1), exclusive=True) is None  # three whole nodes: two are left
