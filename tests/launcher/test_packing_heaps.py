"""The pool's free-slot heaps against a brute-force model: the same choices, whatever the order of places and
releases, and no placement that scans the nodes (the calls' cost does not grow with the allocation)."""

from __future__ import annotations

import random

from sluice.launcher.nodes import Node
from sluice.launcher.packing import NodePool, Placement, Request


def best_fit(free: list[int], taken: list[bool], need: int) -> int | None:
    fits = [(f, i) for i, (f, t) in enumerate(zip(free, taken, strict=True)) if not t and f >= need]
    return min(fits)[1] if fits else None


def test_heaps_choose_what_a_scan_would_over_random_places_and_releases() -> None:
    rng = random.Random(7)
    cores = [8, 8, 4, 16, 8, 2, 8, 8, 12, 8]
    pool = NodePool([Node(f"n{i}", c) for i, c in enumerate(cores)])
    free, taken = list(cores), [False] * len(cores)
    held: list[Placement] = []
    for step in range(20_000):
        if held and rng.random() < 0.45:
            p = held.pop(rng.randrange(len(held)))
            pool.release(p)
            for name in p.nodes:
                i = int(name[1:])
                if p.exclusive:
                    taken[i], free[i] = False, cores[i]
                else:
                    free[i] += p.cores_per_node
            continue
        if rng.random() < 0.1:  # an exclusive job: the lowest idle nodes that are big enough
            want, need = rng.choice([1, 2, 3]), rng.choice([1, 4, 8])
            idle = [i for i in range(len(cores)) if not taken[i] and free[i] == cores[i] and cores[i] >= need]
            p = pool.place(Request(step, num_nodes=want, ranks_per_node=need), exclusive=True)
            if len(idle) < want:
                assert p is None
                continue
            assert p is not None and [int(n[1:]) for n in p.nodes] == idle[:want], (p, idle)
            for i in idle[:want]:
                taken[i], free[i] = True, 0
        else:
            need = rng.choice([1, 1, 1, 2, 3, 4, 8])
            i = best_fit(free, taken, need)
            p = pool.place(Request(step, ranks_per_node=need))
            if i is None:
                assert p is None
                continue
            assert p is not None and p.nodes == (f"n{i}",), (step, p, i, free)
            free[i] -= need
        held.append(p)
        assert pool.free_cores == sum(free)
        assert pool.idle_count == sum(1 for i in range(len(cores)) if not taken[i] and free[i] == cores[i])


def test_a_waiting_wide_job_costs_nothing_per_try() -> None:
    """A 1,024-node job waiting on a busy 4,096-node pool is refused from a count, without touching the nodes."""
    pool = NodePool([Node(f"n{i}", 64) for i in range(4096)])
    small = [pool.place(Request(i, num_nodes=1), exclusive=True) for i in range(3500)]
    assert all(small) and pool.idle_count == 596
    entries = sum(len(h) for h in pool._heaps) + len(pool._idle)
    for j in range(1000):
        assert pool.place(Request(10_000 + j, num_nodes=1024), exclusive=True) is None
    assert sum(len(h) for h in pool._heaps) + len(pool._idle) == entries
    for p in small[:428]:
        assert p is not None
        pool.release(p)
    big = pool.place(Request(1, num_nodes=1024), exclusive=True)
    assert big is not None and len(set(big.nodes)) == 1024


def test_stale_entries_are_compacted() -> None:
    pool = NodePool([Node(f"n{i}", 4) for i in range(8)])
    for _ in range(5000):
        ps = [pool.place(Request(k)) for k in range(32)]
        for p in ps:
            assert p is not None
            pool.release(p)
    assert sum(len(h) for h in pool._heaps) + len(pool._idle) <= 8 * 8 + 1024 + 64
    assert pool.free_cores == 32 and pool.idle_count == 8
