"""How many claimed jobs a launcher holds, and when it claims more (launcher/source.py).

Jobs of one length that started together end together: 10 s jobs on 65,536 slots end in waves of ~25,000 a
second for 2-3 s, then none for 7 s. The claimed buffer must be full when the next wave comes, so it is filled
during the lull, the pace of ends is remembered through it, and claims come in pieces the loop can start from
while the rest is still being read. The first tests drive the source's arithmetic with a stand-in for the
launcher's progress (a few numbers, no processes); the last runs a simulated launcher on a real database.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sluice.api import Workspace, claims
from sluice.api.claims import Selection
from sluice.launcher.launcher import Launcher, Options
from sluice.launcher.simulate import simulated
from sluice.launcher.source import Source

SLOTS = 65_536


@dataclass
class Pace:
    """The launcher as the source sees it (source.Progress)."""

    ended: int = 0
    started: int = 0
    run_s: float = 0.0
    stopping: bool = False
    held: int = 0  # claimed jobs the loop took from the buffer and has not started
    free: int = 0

    def waiting(self) -> int:
        return self.held

    def busy(self) -> bool:
        return True

    def pool_room(self) -> int:
        return 0

    def free_slots(self) -> int:
        return self.free

    def settled(self) -> bool:
        return False

    def time_left_min(self) -> float | None:
        return None


def source(ws: Workspace, pace: Pace, capacity: int = SLOTS) -> Source:
    return Source(ws, 1, "test", Selection(), Options(), capacity, pace, prepare=lambda c: None,
                  process=lambda i, s: None, wake=lambda: None, on_fatal=lambda r: None)


def wave_then_lull(src: Source, pace: Pace, lull_s: float) -> None:
    """25,000 ends in a quarter second, then `lull_s` seconds without one, measured every quarter second."""
    t = 100.0
    src._mark = (t, 0)
    pace.ended = 25_000
    t += 0.25
    src._measure(t)
    for _ in range(int(lull_s / 0.25)):
        t += 0.25
        src._measure(t)


def test_the_pace_of_a_wave_of_ends_is_remembered_through_a_lull_of_one_run_time(sqlite_ws: Workspace) -> None:
    """10 s jobs: 7 s after a wave, the source still holds enough for the whole next wave. It forgot the
    pace within a second before, and met each wave with a quarter of the allocation claimed."""
    pace = Pace(run_s=10.0)
    src = source(sqlite_ws, pace)
    wave_then_lull(src, pace, 7.0)
    assert src.target() >= SLOTS


def test_a_lull_after_hour_long_jobs_lets_the_claims_go_back_to_a_few(sqlite_ws: Workspace) -> None:
    """Hour-long jobs: a wave's pace is forgotten within minutes, not held for the hour until the next wave,
    so the source does not sit on jobs that other launchers could run."""
    pace = Pace(run_s=3600.0)
    src = source(sqlite_ws, pace)
    wave_then_lull(src, pace, 300.0)
    assert src.target() <= SLOTS // 4 + Options().claim_batch


def fill_then_wait(src: Source, pace: Pace, wait_s: float) -> None:
    """The first fill: 65,536 starts in 2 s, then `wait_s` seconds without an end, measured every quarter
    second."""
    t = 100.0
    src._mark = (t, 0)
    for _ in range(8):
        t += 0.25
        pace.started += SLOTS // 8
        src._measure(t)
    for _ in range(int(wait_s / 0.25)):
        t += 0.25
        src._measure(t)


def test_before_any_end_the_pace_of_starts_prepares_the_first_wave(sqlite_ws: Workspace) -> None:
    """10 s jobs that all started in the first fill end together ten seconds later: the buffer must hold that
    wave before any end has told the source a pace. It held a quarter of the allocation, and the first wave's
    restarts took 83-96% of the slots for 2-3 s."""
    pace = Pace()
    src = source(sqlite_ws, pace)
    fill_then_wait(src, pace, 8.0)
    assert src.target() >= SLOTS


def test_during_the_fill_the_pace_of_starts_claims_no_more_than_the_free_slots(sqlite_ws: Workspace) -> None:
    """Claims ahead of the first wave wait for the allocation to be full: made during the fill, they slowed it."""
    pace = Pace(free=SLOTS // 2)
    src = source(sqlite_ws, pace)
    fill_then_wait(src, pace, 0.0)
    assert src.target() <= SLOTS // 4 + Options().claim_batch
    pace.free = 0
    assert src.target() >= SLOTS


def test_hour_long_jobs_after_the_fill_let_the_claims_go_back_to_a_few(sqlite_ws: Workspace) -> None:
    """No end for minutes after the fill: the pace of starts is forgotten as a wave's would be."""
    pace = Pace()
    src = source(sqlite_ws, pace)
    fill_then_wait(src, pace, 300.0)
    assert src.target() <= SLOTS // 4 + Options().claim_batch


@pytest.mark.parametrize("short", [1, Options().claim_batch])
def test_a_big_buffer_tops_up_once_a_batch_is_missing(sqlite_ws: Workspace, short: int) -> None:
    """Between waves the buffer is filled to its target a batch at a time, not left half empty for the wave
    to find (the claims then competed with the wave's own writes for the database and the interpreter)."""
    pace = Pace(run_s=10.0)
    src = source(sqlite_ws, pace)
    wave_then_lull(src, pace, 1.0)
    pace.held = src.target() - short
    assert src.low() == (short >= Options().claim_batch)


def test_a_small_allocation_still_claims_when_half_empty(sqlite_ws: Workspace) -> None:
    pace = Pace()
    src = source(sqlite_ws, pace, capacity=64)
    pace.held = src.target() // 2 + 1
    assert not src.low()
    pace.held = src.target() // 2
    assert src.low()


def test_claims_come_in_pieces_the_loop_can_start_from(sqlite_ws: Workspace,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A claim asks for at most four batches; while short, the next follows at once. One claim of all that a
    wave of ends wanted (64,000 jobs) took 2.5 s under load, and nothing started until its last row was read."""
    ws = sqlite_ws
    ws.add_app("sim", "/bin/does-not-exist --x {x}")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "sim", "params": {"x": i}} for i in range(3_000)])
    asked: list[int] = []
    real = claims.claim

    def claim(*a: object, **kw: object) -> object:
        asked.append(int(a[3]))  # type: ignore[call-overload]
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(claims, "claim", claim)
    s = Launcher(ws, Options(simulate=True, status=False, claim_batch=50), alloc=simulated(16, 64)).run()
    assert s.started == s.finished == len(ids), s.line()
    assert asked and max(asked) <= 4 * 50, asked[:10]
    assert sum(1 for n in asked if n == 200) >= 2  # the first fill of 1,024 slots took several in a row


def test_a_launcher_may_hold_the_changes_of_one_round_of_its_allocation(sqlite_ws: Workspace) -> None:
    """Every slot's end and its restart are two changes: a wave of ends over the whole allocation must not
    stop all starts for the writer to catch up (it did, for 1-1.5 s in each wave, at one change a slot)."""
    la = Launcher(sqlite_ws, Options(simulate=True, status=False), alloc=simulated(1024, 64))
    assert la.max_unwritten >= 2 * SLOTS
