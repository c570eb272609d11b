"""Ask the kernel to run the launcher's hot loop promptly when it wakes, not after the task on its core.

Why: a launcher on a packed node shares every core with its tasks. When a task exits (or a new one has
exec'd), the loop wakes to start the next, but Linux's EEVDF scheduler lets the running task finish its
slice first (1.4 ms on two cores, more on big nodes): with tasks lasting about a millisecond, the loop spent
as long waiting for a core as working, and the cores idled between tasks. Since Linux 6.12 a thread may ask
for a shorter slice (``sched_attr.sched_runtime`` under SCHED_OTHER, no privilege needed); a thread with a
shorter slice preempts a longer-sliced one when it wakes, runs its few hundred microseconds, and sleeps
again. The flag RESET_ON_FORK keeps the request from leaking into tasks and threads started afterwards.

Older kernels ignore the request; other systems lack the call: both leave the launcher as it was.
"""
from __future__ import annotations

import ctypes
import gc
import platform
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["prompt_wakeups", "rare_collections", "slice_ns"]

# sched_setattr / sched_getattr by architecture (x86_64, aarch64, ppc64le, s390x)
_NR = {"x86_64": (314, 315), "aarch64": (274, 275), "ppc64le": (355, 356), "s390x": (345, 346)}
_RESET_ON_FORK = 0x01
SHORT_NS = 100_000  # the shortest slice the kernel grants (0.1 ms)


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.machine() not in _NR:
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a static or unusual libc
        return None


_LIBC = _libc()
_SET, _GET = _NR.get(platform.machine(), (-1, -1))


def _get() -> _SchedAttr | None:
    if _LIBC is None:
        return None
    attr = _SchedAttr()
    if _LIBC.syscall(_GET, 0, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return None
    return attr


def slice_ns() -> int | None:
    """The calling thread's slice in ns as the kernel reports it, or None where unknown."""
    attr = _get()
    return None if attr is None else int(attr.sched_runtime)


def _set(attr: _SchedAttr) -> bool:
    assert _LIBC is not None
    attr.size = ctypes.sizeof(_SchedAttr)
    return _LIBC.syscall(_SET, 0, ctypes.byref(attr), 0) == 0


@contextmanager
def prompt_wakeups(ns: int = SHORT_NS) -> Iterator[bool]:
    """Within the block, the calling thread asks for slices of `ns` (0: leaves it alone); yields whether the
    kernel took it.

    Only a thread under the normal policy is touched (a launcher put under SCHED_FIFO or SCHED_BATCH on
    purpose stays so) and its nice value is kept; on the way out its flags and the kernel's default slice
    come back, since `Launcher.run` may be called from a user's own thread.
    """
    before = _get()
    took = False
    if ns > 0 and before is not None and before.sched_policy == 0:
        want = _SchedAttr(sched_policy=0, sched_flags=before.sched_flags | _RESET_ON_FORK,
                          sched_nice=before.sched_nice, sched_runtime=ns)
        took = _set(want)
    try:
        yield took
    finally:
        if took and before is not None:
            before.sched_runtime = 0  # the kernel's default slice (it reports that default, not 0)
            _set(before)


GC_GEN0 = 50_000
"""Allocations between young-generation collections while a launcher runs (Python's default: 700)."""


@contextmanager
def rare_collections(gen0: int = GC_GEN0) -> Iterator[None]:
    """Within the block, the cyclic garbage collector runs every `gen0` allocations instead of every 700.

    Why: a launcher allocates a dozen objects a job (its claimed record, its changes, its events) that
    reference counting frees, and holds tens of thousands more (the claimed buffer, the running jobs): the
    default thresholds ran a collection every ~50 jobs and cost 5-6 us a job of a ~15 us claim (claiming
    100,000 jobs, bench/README.md). Nothing here makes cycles in bulk, so collecting rarely frees the same.
    The process's thresholds come back on the way out (`Launcher.run` may be called from a user's program).
    """
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], gen0), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
