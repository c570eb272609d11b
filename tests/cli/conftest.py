"""Helpers for the CLI tests: run `sluice` in-process (click's CliRunner) and check the one-line errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sluice.api import Workspace
from sluice.cli.main import cli

Run = Callable[..., Result]


@pytest.fixture
def run() -> Run:
    """run("ls", "--json", input="y\\n", env={...}) -> Result; uses $SLUICE_WORKSPACE as set by the ws fixture."""
    runner = CliRunner()

    def _run(*args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
        return runner.invoke(cli, list(args), input=input, env=env, catch_exceptions=True)

    return _run


def ok(result: Result) -> Result:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}"
    return result


def user_error(result: Result, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr starting `sluice: error:`, no traceback; returns the line."""
    assert result.exit_code == 2, f"exit {result.exit_code}: {result.output} {result.exc_info}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sluice: error: "), lines[0]
    assert "Traceback" not in result.output
    for f in fragments:
        assert f.lower() in lines[0].lower(), lines[0]
    return lines[0]


def fault(result: Result, *fragments: str) -> str:
    """An environmental fault (database, scheduler, disk): exit 3, one line `sluice: error:`, no traceback."""
    assert result.exit_code == 3, f"exit {result.exit_code}: {result.output} {result.exc_info}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sluice: error: "), result.stderr
    assert "Traceback" not in result.output
    for f in fragments:
        assert f.lower() in lines[0].lower(), lines[0]
    return lines[0]


def snapshot(ws: Workspace) -> tuple[Any, ...]:
    """Everything a failed command must leave as it was."""
    jobs = ws.jobs()
    ids = [j.id for j in jobs]
    return (
        ws.count(),
        ws.summary(),
        [(j.id, j.name, j.workflow, j.state, j.num_nodes, j.params, j.wall_time_min) for j in jobs],
        sorted(a.name for a in ws.apps()),
        len(ws.events()),
        ws.edges(ids) if ids else [],
    )


def add_sim(ws: Workspace) -> None:
    ws.add_app("sim", "simulate --temp {temp}", "a simulation")


def lines(text: str) -> Sequence[str]:
    return [ln for ln in text.splitlines() if ln.strip()]
