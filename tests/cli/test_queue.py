"""`sluice queue submit|ls|cancel` and `sluice service --once` through the real CLI, local scheduler."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sluice.api import Workspace
from sluice.cli.main import cli


def run(ws: Workspace, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args), env={"SLUICE_WORKSPACE": str(ws.path)})
    return r.exit_code, r.stdout, r.stderr


def test_queue_submit_ls_cancel(sqlite_ws: Workspace) -> None:
    code, out, err = run(sqlite_ws, "queue", "submit", "--nodes", "1", "--wall-time", "00:02:00")
    assert code == 0 and "submitted as local job" in out, err
    code, out, _ = run(sqlite_ws, "queue", "ls", "--json")
    (row,) = json.loads(out)
    assert row["state"] in ("queued", "running") and row["wall_time_min"] == 2
    code, out, _ = run(sqlite_ws, "queue", "cancel", str(row["id"]))
    assert code == 0 and "cancelled" in out
    code, out, _ = run(sqlite_ws, "queue", "ls", "--all")
    assert "cancelled" in out


def test_queue_bad_input_is_one_line_and_changes_nothing(sqlite_ws: Workspace) -> None:
    for args in (["queue", "submit", "--nodes", "0", "--wall-time", "5"],
                 ["queue", "submit", "--nodes", "1", "--wall-time", "soon"],
                 ["queue", "cancel", "99"],
                 ["queue", "submit", "--nodes", "1", "--wall-time", "5", "--scheduler", "sge"]):
        code, out, err = run(sqlite_ws, *args)
        assert code == 2 and err.count("\n") == 1 and err.startswith("sluice: error:"), (args, err)
    assert sqlite_ws.batch_jobs() == []


def test_service_once_submits_for_runnable_work(sqlite_ws: Workspace) -> None:
    sqlite_ws.add_app("t", "/bin/true")
    sqlite_ws.add_job("t", app="t")
    code, _, err = run(sqlite_ws, "service", "--once", "--idle-timeout", "1")
    assert code == 0, err
    (row,) = sqlite_ws.batch_jobs()
    assert row["scheduler"] == "local" and row["native_id"]
