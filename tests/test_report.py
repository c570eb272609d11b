"""Reports are computed from the event log alone."""

from __future__ import annotations

from click.testing import CliRunner

from sluice.api import Workspace
from sluice.cli.main import cli
from sluice.report import build
from sluice.states import S


def test_report_counts_throughput_utilization_and_errors(sqlite_ws: Workspace) -> None:
    ws = sqlite_ws
    ws.add_app("a", "/bin/true")
    ids = ws.add_jobs([{"name": f"j{i}", "app": "a", "max_retries": 0} for i in range(3)])
    for j in ids:
        ws.set_state(j, S.RUNNING, by_launcher=True)  # three running at once
    for j in ids[:2]:
        for st in (S.RUN_DONE, S.POSTPROCESSED, S.JOB_FINISHED):
            ws.set_state(j, st, by_launcher=True)
    ws.set_state(ids[2], S.RUN_ERROR, "exit code 3", by_launcher=True)
    ws.set_state(ids[2], S.FAILED)
    r = build(ws, bins=4)
    assert (r.finished, r.failed, r.runs, r.peak_running) == (2, 1, 3, 3)
    assert r.errors == {"RUN_ERROR: exit code 3": 1}
    assert r.timeline[-1]["finished"] == 2
    out = CliRunner().invoke(cli, ["report", "--bins", "3"], env={"SLUICE_WORKSPACE": str(ws.path)})
    assert out.exit_code == 0 and "2 finished, 1 failed, 3 runs" in out.output


def test_report_of_an_empty_campaign(sqlite_ws: Workspace) -> None:
    assert build(sqlite_ws).runs == 0
    out = CliRunner().invoke(cli, ["report"], env={"SLUICE_WORKSPACE": str(sqlite_ws.path)})
    assert out.exit_code == 0 and "no job has run yet" in out.output
