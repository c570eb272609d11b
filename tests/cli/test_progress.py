"""Terminal output that stays readable on big campaigns, the fast reads of show/history/queue ls, the live view
of `ls --watch` and `sluice wait` (run as a command here: its exit codes are for scripts)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sluice.api import Workspace, fast
from sluice.api.progress import Snapshot
from sluice.cli import render
from sluice.cli.query import relatives_text
from sluice.cli.wait import Rate, bar, view_lines, wait
from sluice.errors import UserError
from sluice.states import S

from .conftest import Run, add_sim, ok, user_error


def rich_table(columns: list[str], rows: list[list[str]], title: str | None = None) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    buf = io.StringIO()
    c = Console(file=buf, width=4000, soft_wrap=True, highlight=False, emoji=False, markup=False)
    t = Table(*columns, box=box.SIMPLE_HEAD, title=title, show_edge=False, pad_edge=False, header_style="bold")
    for r in rows:
        t.add_row(*r)
    c.print(t)
    return "\n".join(line.rstrip() for line in buf.getvalue().rstrip("\n").split("\n"))


@pytest.mark.parametrize(("columns", "rows", "title"), [
    (["state", "jobs"], [["READY", "3"], ["JOB_FINISHED", "1200"], ["total", "1203"]], None),
    (["time", "change", "actor", "message"], [["2026-12-01 08:00:00.000", "CREATED → READY", "me@host", "created"],
                                              ["x", "READY → STAGED_IN", "", ""]], "history"),
    (["a", "bb"], [], "h"),
    (["a", "bb"], [["", ""]], None),
])
def test_plain_tables_are_richs_layout_without_trailing_spaces(columns: list[str], rows: list[list[str]],
                                                               title: str | None) -> None:
    assert render.plain_table(columns, rows, title) == rich_table(columns, rows, title)


def test_cells_only_rich_can_measure_go_to_rich() -> None:
    assert render.plain_table(["a"], [["中文"]]) is None
    assert render.plain_table(["a"], [["two\nlines"]]) is None
    assert render.plain_table(["a"], [["x" * 50]], max_width=20) is None  # wider than the terminal


def test_relatives_are_listed_when_few_and_counted_when_many() -> None:
    assert relatives_text({}, [], 7, "parents") == "none"
    assert relatives_text({"READY": 2}, [(1, "a", "READY"), (2, "b", "READY")], 7, "parents") == \
        "1 a [READY], 2 b [READY]"
    first = [(i, f"j{i}", "JOB_FINISHED") for i in range(1, 11)]
    assert relatives_text({"RUNNING": 50, "JOB_FINISHED": 150}, first, 7, "children") == (
        "200: 50 RUNNING, 150 JOB_FINISHED\n"
        "1 j1 [JOB_FINISHED], 2 j2 [JOB_FINISHED], 3 j3 [JOB_FINISHED], 4 j4 [JOB_FINISHED], 5 j5 [JOB_FINISHED], ...\n"
        "all of them: sluice ls --children-of 7")


def fan_in(ws: Workspace, n: int = 200) -> tuple[list[int], int]:
    add_sim(ws)
    parents = ws.add_jobs([{"name": f"p{i}", "app": "sim", "params": {"temp": i}, "workflow": "w"} for i in range(n)])
    merge = ws.add_job("merge", app="sim", params={"temp": 0}, workflow="w", parents=parents)
    return parents, merge.id


def test_show_of_a_fan_in_counts_its_parents(run: Run, sqlite_ws: Workspace) -> None:
    parents, merge = fan_in(sqlite_ws)
    for p in parents[:3]:
        sqlite_ws.set_state(p, S.RUNNING, by_launcher=True)
    out = ok(run("show", str(merge))).stdout
    lines = out.splitlines()
    assert not [ln for ln in lines if ln != ln.rstrip()]  # nothing padded
    assert max(map(len, lines)) < 200
    i = next(i for i, ln in enumerate(lines) if ln.startswith("parents"))
    assert lines[i].split(None, 1)[1] == "200: 197 PREPROCESSED, 3 RUNNING"
    assert lines[i + 1].strip().startswith(f"{parents[0]} p0 [RUNNING], {parents[1]} p1 [RUNNING]")
    assert lines[i + 2].strip() == f"all of them: sluice ls --parents-of {merge}"
    assert lines[i + 3].split() == ["children", "none"]
    d = json.loads(ok(run("show", str(merge), "--json")).stdout)
    assert [p["id"] for p in d["parents"]] == parents  # JSON is for programs: all of them
    listed = ok(run("ls", "--parents-of", str(merge), "--limit", "0")).stdout.splitlines()[2:]
    assert [int(ln.split()[0]) for ln in listed] == parents
    assert ok(run("ls", "--children-of", str(parents[5]))).stdout.splitlines()[2].split()[:2] == [str(merge), "merge"]
    counts = json.loads(ok(run("ls", "--parents-of", str(merge), "--summary", "--json")).stdout)
    assert counts == {"PREPROCESSED": 197, "RUNNING": 3}
    running = json.loads(ok(run("ls", "--parents-of", str(merge), "--state", "RUNNING", "--summary", "--json")).stdout)
    assert running == {"RUNNING": 3}
    user_error(run("ls", "--parents-of", "1", "--children-of", "2"), "not both")


def test_the_fast_and_the_normal_paths_print_the_same(run: Run, ws: Workspace,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    parents, merge = fan_in(ws, 12)
    ws.set_state(parents[0], S.RUNNING, by_launcher=True)
    ws.set_state(parents[0], S.RUN_ERROR, "exit code 3", by_launcher=True)
    commands = [["show", str(merge)], ["show", str(merge), "--json"], ["show", "w/p0"], ["show", "w/p0", "--json"],
                ["history", str(parents[0])], ["history", str(parents[0]), "--json"],
                ["ls", "--parents-of", str(merge), "--limit", "5"], ["ls", "--children-of", str(parents[1])]]
    fast_out = [ok(run(*c)).stdout for c in commands]
    for name in ("job_view", "history", "listing", "summary", "resolve"):
        monkeypatch.setattr(fast, name, lambda *a, **k: None)
    assert [ok(run(*c)).stdout for c in commands] == fast_out


def test_queue_ls_fast_matches_the_api(sqlite_ws: Workspace) -> None:
    from sluice.api import batch
    from sluice.api.records import job_path

    assert fast.BATCH_ACTIVE == batch.ACTIVE
    bid = batch.add(sqlite_ws, scheduler="local", num_nodes=2, wall_time_min=5, queue=None, project=None,
                    job_mode="serial")
    batch.change(sqlite_ws, [(bid, {"state": "failed", "message": "no", "filters": {"workflow": ["w"]}})])
    batch.add(sqlite_ws, scheduler="slurm", num_nodes=1, wall_time_min=5, queue="debug", project="p",
              job_mode="mpi")
    for active in (True, False):
        assert fast.batch_jobs(str(sqlite_ws.path), active) == sqlite_ws.batch_jobs(active_only=active)
    for args in ((Path("/d"), None, "w", "n", 3), (Path("/d"), "x/y", "w", "n", 3), (Path("/d"), "/abs", "w", "n", 3)):
        assert fast.job_path(*args) == job_path(*args)


def test_tree_draws_a_fan_in_once(run: Run, sqlite_ws: Workspace) -> None:
    parents, merge = fan_in(sqlite_ws, 30)
    out = ok(run("ls", "--tree")).stdout
    assert out.count("w/merge") == 30  # drawn once, pointed at from the 29 other parents
    assert out.count(f"{merge} w/merge [AWAITING_PARENTS] (+29 more parents)") == 1
    assert out.count(f"↑ {merge} w/merge [AWAITING_PARENTS] (drawn under {parents[0]})") == 29


def test_rate_is_over_the_last_window() -> None:
    r = Rate(window=10)
    assert r.add(0, 0) == 0
    assert r.add(1, 10) == 10
    assert r.add(2, 30) == 15
    for t in range(3, 21):
        got = r.add(t, 30 + 5 * (t - 2))
    assert got == 5  # the early burst has left the window
    assert r.add(21, 0) == 0  # jobs re-run: never a negative rate


def test_view_lines_exact() -> None:
    snap = Snapshot({"RUNNING": 25, "JOB_FINISHED": 70, "FAILED": 5}, 75.2)
    assert bar(0.5, 4) == "██" and bar(1 / 16, 2) == "▏" and bar(0, 4) == ""
    assert view_lines(snap, 2.5, "scan") == [
        "scan: 75 of 100 job(s) ended (75.0%), 2.5/s over the last 10 s, about 0:10 left; 1:15 elapsed",
        "  [" + "█" * 22 + "▌" + " " * 7 + "]",
        "  RUNNING       25  " + "█" * 7 + "▌",
        "  JOB_FINISHED  70  " + "█" * 21,
        "  FAILED         5  █▌",
    ]


def _invoke_wait(ws: Workspace, *args: str) -> Any:
    return CliRunner().invoke(wait, list(args), env={"SLUICE_WORKSPACE": str(ws.path)})


def test_wait_exit_codes(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    add_sim(ws)
    a, b = ws.add_jobs([{"name": n, "app": "sim", "params": {"temp": 1}, "workflow": "w"} for n in "ab"])
    r = _invoke_wait(ws, "--workflow", "w", "--timeout", "0")
    assert r.exit_code == 4, r.output
    assert r.stdout == "sluice: timed out after 0 s: 2 of 2 job(s) not ended (2 PREPROCESSED)\n"
    for st in (S.RUNNING, S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED):
        ws.set_state(a, st, by_launcher=True)
    r = _invoke_wait(ws, "--workflow", "w", "--state", "JOB_FINISHED")
    assert r.exit_code == 0 and r.stdout.startswith("sluice: 1 job(s) ended in ") and \
        r.stdout.endswith(" s: 1 JOB_FINISHED\n"), r.output
    ws.kill(b)
    r = _invoke_wait(ws, "--workflow", "w")
    assert r.exit_code == 1 and r.stdout.endswith(": 1 JOB_FINISHED, 1 USER_KILLED\n"), r.output
    r = _invoke_wait(ws, "--workflow", "nope")  # the group turns it into exit 2 and one line
    assert isinstance(r.exception, UserError) and str(r.exception).startswith("no jobs match; nothing to wait for")


def test_ls_watch_piped_prints_a_line_per_change(run: Run, sqlite_ws: Workspace,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    add_sim(sqlite_ws)
    sqlite_ws.add_job("a", app="sim", params={"temp": 1})
    seen: list[dict[str, Any]] = []

    def snapshots(self: Workspace, **kw: Any) -> Iterator[Snapshot]:
        seen.append(kw)
        yield from (Snapshot({"RUNNING": 2}, 0.0), Snapshot({"RUNNING": 2}, 1.0),
                    Snapshot({"RUNNING": 1, "JOB_FINISHED": 1}, 2.0))

    monkeypatch.setattr(Workspace, "snapshots", snapshots)
    out = ok(run("ls", "--watch", "--workflow", "w")).stdout.splitlines()
    assert [ln.split(" ", 1)[1] for ln in out] == ["0/2 ended, 0.0/s: 2 RUNNING",
                                                   "1/2 ended, 0.5/s: 1 RUNNING, 1 JOB_FINISHED"]
    assert seen == [{"poll": 1.0, "timeout": None, "until_done": False, "workflow": ["w"]}]
    user_error(run("ls", "--watch", "--tree"), "--watch")


def test_rm_of_many_goes_in_chunks_and_still_refuses_running_jobs(run: Run, ws: Workspace,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import sluice.cli.jobs

    monkeypatch.setattr(sluice.cli.jobs, "RM_CHUNK", 3)
    parents, merge = fan_in(ws, 9)
    keep = ws.add_job("keep", app="sim", params={"temp": 0}, workflow="k", parents=[parents[0]])
    ws.set_state(parents[4], S.RUNNING, by_launcher=True)
    before = len(ws.events())
    user_error(run("rm", "--workflow", "w", "--yes"), "RUNNING")
    assert ws.count(workflow="w") == 10 and len(ws.events()) == before  # nothing changed
    r = ok(run("rm", "--workflow", "w", "--yes", "--force"))
    assert r.stdout == "removed 10 job(s)\n" and r.stderr == ""  # piped: no bar
    assert ws.count() == 1 and ws.job(keep.id).state == "PREPROCESSED"  # released: its parent is gone
