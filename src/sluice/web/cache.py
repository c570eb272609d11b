"""Snapshots: answers recomputed at most once per interval and shared by every request that asks.

Why: counting a million jobs takes ~0.1 s on SQLite and more on a server, and a dashboard asks every second
from every open tab. So each answer (the counts by state, a workflow's graph) is computed by one thread at a
time, kept with the time it was taken, and served from memory until it is older than its interval; a stale one
is served at once while one background refresh runs (stale-while-revalidate), so a request never waits for a
count except the very first. The interval grows with the cost (`factor` x how long the last computation took)
so that a slow query cannot keep the database busy: the dashboard stays a light reader beside the launchers.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any


@dataclass
class Snapshot:
    """A computed answer, when it was taken (epoch seconds) and how long it took; `checked_at` is the last
    attempt to refresh it and `error` what that attempt raised (the value is then the older answer)."""

    value: Any
    taken_at: float
    duration: float
    error: BaseException | None = None
    checked_at: float = 0.0

    def __post_init__(self) -> None:
        self.checked_at = self.checked_at or self.taken_at

    @property
    def age(self) -> float:
        return max(0.0, time.time() - self.taken_at)


class Snapshots:
    """A bounded map of key -> Snapshot, each refreshed by at most one thread at a time."""

    def __init__(self, *, min_interval: float = 1.0, factor: float = 5.0, max_keys: int = 64) -> None:
        self.min_interval = min_interval
        self.factor = factor
        self.max_keys = max_keys
        self._items: OrderedDict[Hashable, Snapshot] = OrderedDict()
        self._busy: set[Hashable] = set()
        self._lock = threading.Lock()
        self._first: dict[Hashable, threading.Lock] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sluice-web-refresh")

    def interval(self, snap: Snapshot) -> float:
        """How long a snapshot stays fresh: at least min_interval, longer when it was expensive."""
        return max(self.min_interval, self.factor * snap.duration)

    def get(self, key: Hashable, compute: Callable[[Snapshot | None], Any], *,
            max_age: float | None = None) -> Snapshot:
        """The snapshot for key: computed now if there is none, or the one held is older than `max_age` (once,
        however many ask at the same time), else the one held, with a refresh started in the background when
        it is stale. `compute` gets the previous snapshot (or None) to use as a hint. A failed computation's
        error is raised here when no older answer exists, else the older answer is served."""
        with self._lock:
            snap = self._items.get(key)
            if snap is not None and (max_age is None or snap.age <= max_age):
                self._items.move_to_end(key)
                if time.time() - snap.checked_at >= self.interval(snap) and key not in self._busy:
                    self._busy.add(key)
                    self._pool.submit(self._refresh, key, compute, snap)
                return snap
            first = self._first.setdefault(key, threading.Lock())
        with first:  # a computation a request waits for: later arrivals wait for it instead of repeating it
            with self._lock:
                held = self._items.get(key)
            if held is None or (max_age is not None and held.age > max_age):
                snap = self._compute(compute, held)
                if snap.error is not None:
                    raise snap.error
                self._store(key, snap)
            else:
                snap = held
        with self._lock:
            self._first.pop(key, None)
        return snap

    def _refresh(self, key: Hashable, compute: Callable[[Snapshot | None], Any], old: Snapshot) -> None:
        try:
            snap = self._compute(compute, old)
            if snap.error is None:
                self._store(key, snap)
            else:  # keep the old answer (its age shows); try again after another interval
                self._store(key, Snapshot(old.value, old.taken_at, old.duration, snap.error, time.time()))
        finally:
            with self._lock:
                self._busy.discard(key)

    @staticmethod
    def _compute(compute: Callable[[Snapshot | None], Any], old: Snapshot | None) -> Snapshot:
        t0 = time.perf_counter()
        taken = time.time()
        try:
            value = compute(old)
        except Exception as e:
            return Snapshot(None, taken, time.perf_counter() - t0, e)
        return Snapshot(value, taken, time.perf_counter() - t0)

    def _store(self, key: Hashable, snap: Snapshot) -> None:
        with self._lock:
            self._items[key] = snap
            self._items.move_to_end(key)
            while len(self._items) > self.max_keys:
                self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every snapshot (after an action changed a job, so the next read is fresh)."""
        with self._lock:
            self._items.clear()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
