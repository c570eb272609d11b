"""Reports are computed from the event log alone: exact series on a campaign whose every event time is known,
the plots read back (SVG paths, PNG pixels), failure causes with stderr, shared parameters, and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import insert, update

from sluice.api import Workspace
from sluice.cli.main import cli
from sluice.cli.report import parse_since
from sluice.report import build, failures, plots, series, text
from sluice.store.models import events, jobs, launcher_sessions

T = 1_000_000.0
RUN = [("PREPROCESSED", "RUNNING"), ("RUNNING", "RUN_DONE"), ("RUN_DONE", "POSTPROCESSED"),
       ("POSTPROCESSED", "JOB_FINISHED")]


def history(ws: Workspace, steps: list[tuple[int, str, str, float, str | None]], states: dict[int, str]) -> None:
    """Write events at the given times (as a launcher would have), and the jobs' current states."""
    with ws.write() as conn:
        conn.execute(update(events).values(timestamp=T))  # creation: all at T
        conn.execute(insert(events), [{"job_id": j, "from_state": f, "to_state": t, "timestamp": ts,
                                       "actor": "launcher:1", "message": m} for j, f, t, ts, m in steps])
        for j, st in states.items():
            conn.execute(update(jobs).where(jobs.c.id == j).values(state=st))
        conn.execute(insert(launcher_sessions).values(host="h", pid=1, job_mode="serial", started_at=T - 5,
                                                      heartbeat_at=T + 25, ended_at=T + 25,
                                                      info={"nodes": ["n1", "n2", "n3"]}))


@pytest.fixture
def campaign(ws: Workspace) -> tuple[Workspace, list[int]]:
    """Five jobs on 4-core nodes: j0 runs 10 s; j1 fails after 5 s and runs again 10 s; j2 runs 10 s and fails
    for good; j3 never runs; j4 holds 2 nodes (8 cores) for 20 s."""
    cfg = ws.path / "sluice.toml"
    cfg.write_text(cfg.read_text().replace("[launcher]\n", "[launcher]\ncores_per_node = 4\n", 1))
    ws = Workspace.open(ws.path)
    ws.add_app("a", "/bin/echo {mesh}")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a", "workflow": "w", "params": {"mesh": "fine" if i == 2 else "x"}}
                       for i in range(4)] + [{"name": "j4", "app": "a", "workflow": "w", "num_nodes": 2,
                                              "ranks_per_node": 4, "params": {"mesh": "x"}}])
    j0, j1, j2, _j3, j4 = ids
    done = [(j, f, t, at + (0 if i == 0 else d), None) for j, at, d in ((j0, T, 10), (j4, T, 20))
            for i, (f, t) in enumerate(RUN)]
    steps = [*done,
             (j1, "PREPROCESSED", "RUNNING", T, None), (j1, "RUNNING", "RUN_ERROR", T + 5, "exit code 3"),
             (j1, "RUN_ERROR", "RESTART_READY", T + 5, None), (j1, "RESTART_READY", "RUNNING", T + 10, None),
             *[(j1, f, t, T + 20, None) for f, t in RUN[1:]],
             (j2, "PREPROCESSED", "RUNNING", T + 10, None), (j2, "RUNNING", "RUN_ERROR", T + 20, "exit code 3"),
             (j2, "RUN_ERROR", "FAILED", T + 20, "out of retries")]
    history(ws, sorted(steps, key=lambda s: s[3]), {j0: "JOB_FINISHED", j1: "JOB_FINISHED", j2: "FAILED",
                                                    j4: "JOB_FINISHED"})
    err = ws.job(j2).path / "j2.err"
    err.parent.mkdir(parents=True, exist_ok=True)
    err.write_text("reading mesh\n\nTraceback (most recent call last):\n  solve()\nValueError: mesh too fine\n")
    return ws, ids


def test_series_of_a_known_campaign(campaign: tuple[Workspace, list[int]]) -> None:
    ws, (j0, j1, j2, j3, j4) = campaign
    r = build(ws, bins=2, now=T + 30)
    assert (r.start, r.end, r.edges) == (T, T + 20, [T, T + 10, T + 20])
    assert (r.finished_per_bin, r.failed_per_bin, r.errors_per_bin) == ([0, 3], [0, 1], [1, 1])
    assert (r.finished, r.failed, r.errors, r.runs) == (3, 1, 2, 5)
    assert r.busy_cores == pytest.approx([9.5, 10.0])  # j0 + half of j1 + j4's 8 cores; then j1, j2, j4
    assert r.busy_nodes == pytest.approx([2.375, 2.5])  # a one-core job holds a quarter of a 4-core node
    assert (r.peak_busy_cores, r.peak_busy_nodes) == (10.0, 2.5)
    assert r.alloc_nodes == [3.0, 3.0] and r.node_utilization == pytest.approx(4.875 / 6)
    assert r.time_in_state == {"PREPROCESSED": 40.0, "RUNNING": 55.0, "RESTART_READY": 5.0}
    assert r.sampled == r.jobs == 5
    assert [(c["state"], c["message"], c["count"], c["job_id"], c["stderr"]) for c in r.causes] == [
        ("RUN_ERROR", "exit code 3", 2, j2,
         ["reading mesh", "Traceback (most recent call last):", "  solve()", "ValueError: mesh too fine"]),
        ("FAILED", "out of retries", 1, j2, ["reading mesh", "Traceback (most recent call last):", "  solve()",
                                             "ValueError: mesh too fine"])]
    assert [(x["id"], x["seconds"]) for x in r.longest] == [(j4, 20), (j0, 10), (j1, 10), (j2, 10), (j1, 5)]
    late = build(ws, bins=1, since=T + 10, now=T + 30)  # a window: only what happened from T+10
    assert (late.finished, late.failed, late.runs) == (3, 1, 2)
    assert late.time_in_state == {"PREPROCESSED": 20.0, "RUNNING": 30.0}  # j3 waits; j1, j2, j4 run
    assert build(ws, workflow="other").edges == []


def test_plots_draw_those_series(campaign: tuple[Workspace, list[int]], tmp_path: Path) -> None:
    ws, _ = campaign
    r = build(ws, bins=2, now=T + 30)
    s = plots.series(r)
    assert s["throughput"]["finished"] == ([0.0, 10 / 60, 20 / 60], [0.0, 0.0, 3.0])  # minutes; cumulative
    assert s["throughput"]["rate"] == ([5 / 60, 15 / 60], [0.0, 0.3])
    assert s["failures"]["failed"] == ([5 / 60, 15 / 60], [0.0, 1.0])
    assert s["states"]["time_in_state"] == ([0.0, 1.0, 2.0], [40 / 3600, 55 / 3600, 5 / 3600])
    files = plots.draw(r, tmp_path)
    assert sorted(p.name for p in files) == sorted(f"{n}.{x}" for n in plots.PLOTS for x in ("png", "svg"))
    for plot, lines in s.items():
        svg = (tmp_path / f"{plot}.svg").read_text()
        for name, (xs, _) in lines.items():
            if name == "time_in_state":
                assert len(re.findall(r'<g id="time_in_state-', svg)) == len(xs)
                continue
            d = re.search(rf'<g id="{name}">\s*<path d="([^"]*)"', svg)
            assert d is not None, (plot, name)
            assert len(re.findall(r"[ML] ", d.group(1))) == len(xs), (plot, name)
    import matplotlib.image

    for plot, name in (("throughput", "finished"), ("failures", "failed"), ("utilization", "busy_nodes")):
        px = (matplotlib.image.imread(tmp_path / f"{plot}.png")[..., :3] * 255).round()
        want = np.array([int(plots.COLORS[name][i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(px - want).max(axis=-1) <= 2).sum() > 50, (plot, name)  # the line is there


def test_cli_report_text_json_and_plots(campaign: tuple[Workspace, list[int]], tmp_path: Path) -> None:
    ws, (_, _, j2, _, _) = campaign
    env = {"SLUICE_WORKSPACE": str(ws.path)}
    out = CliRunner().invoke(cli, ["report", "--workflow", "w", "--bins", "2", "--out", str(tmp_path / "r")],
                             env=env)
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0] == "w: 5 job(s) now: 1 PREPROCESSED, 3 JOB_FINISHED, 1 FAILED"
    assert lines[1].endswith("(20.0 s): 3 finished (0.15/s, peak 0.30/s), 1 failed, 2 run error(s) or timeout(s), "
                             "5 run(s)")
    assert lines[2] == ("busy at most: 2 node(s), 10 core(s); 81.2% of the node-hours allocated, 81.2% of the "
                        "core-hours (3 nodes at most, 4 cores each)")
    assert lines[3].startswith("time in each state, summed over jobs: PREPROCESSED ")  # j3 waits until now
    assert lines[3].endswith(", RUNNING 55.0 s (0%), RESTART_READY 5.0 s (0%)")
    assert f"         2  RUN_ERROR: exit code 3  (latest: job {j2})" in lines
    assert "            | ValueError: mesh too fine" in lines
    assert (tmp_path / "r" / "throughput.png").stat().st_size > 1000
    d = json.loads(CliRunner().invoke(cli, ["report", "--json", "--no-plots"], env=env).stdout)
    assert d["finished"] == 3 and d["plots"] == [] and d["workflows"] is None
    bad = CliRunner().invoke(cli, ["report", "--since", "yesterday-ish"], env=env)
    assert bad.exit_code == 2 and bad.stderr.startswith("sluice: error: --since 'yesterday-ish'")


def test_report_of_an_empty_campaign(sqlite_ws: Workspace) -> None:
    r = build(sqlite_ws)
    assert r.runs == 0 and r.edges == [] and text.summary(r) == ["all workflows: 0 job(s) now: none",
                                                                  "no job has run yet"]
    out = CliRunner().invoke(cli, ["report"], env={"SLUICE_WORKSPACE": str(sqlite_ws.path)})
    assert out.exit_code == 0 and out.stdout.endswith("no job has run yet\n")


def test_parameters_failed_jobs_share() -> None:
    everyone = [{"mesh": "fine" if i % 10 == 0 else "coarse", "temp": 300 + i, "seed": i % 3} for i in range(100)]
    failed = [p for p in everyone if p["mesh"] == "fine" or p["temp"] >= 380]
    got = failures.over_represented(failed, everyone)
    assert [(g["key"], g.get("value"), g["failed"]) for g in got] == [("mesh", "fine", 10), ("temp", None, 28)]
    assert failures.describe(got[0]) == "mesh=fine: 36% of failed jobs, 10% of all (3.57x)"
    assert failures.describe(got[1]) == "temp above 375: 71% of failed jobs, 24% of all (median 385.5 against 349.5)"
    assert failures.over_represented(failed[:2], everyone) == []  # too few to say
    assert failures.over_represented([], everyone) == []


def test_runs_pair_starts_with_ends_and_level_means_are_exact() -> None:
    rows = [(1, 1, 0.0, None), (2, 1, 1.0, None), (1, 8 + 4, 2.0, "x"), (1, 1, 3.0, None), (2, 8, 4.0, None),
            (2, 2, 4.0, None)]
    c = series.Columns.of(rows)
    assert c.kind.tolist() == [1, 1, 4, 1, 0, 2] and c.left_running.tolist() == [False, False, True, False, True,
                                                                                     False]
    r = series.runs(c, now=10.0)
    assert list(zip(r.job.tolist(), r.start.tolist(), r.end.tolist(), strict=True)) == [
        (1, 0.0, 2.0), (1, 3.0, 10.0), (2, 1.0, 4.0)]
    e = series.edges(0.0, 10.0, 2)
    assert series.level_mean(r.start, r.end, r.nodes, e).tolist() == [(2 + 3 + 2) / 5, 5 / 5]
    assert series.peak_level(r.start, r.end, r.nodes) == 2.0


def test_since_accepts_ago_epoch_and_dates() -> None:
    assert parse_since("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_since("90s", now=100.0) == 10.0 and parse_since("1700000000") == 1_700_000_000.0
    assert parse_since("2026-12-01T08:00") > 1_700_000_000
