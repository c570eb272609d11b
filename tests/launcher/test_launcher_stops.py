"""Why a launcher stopped: the reason in its Summary (and its summary line) names what ended it."""

from __future__ import annotations

from sluice.api import Workspace
from sluice.launcher.launcher import Launcher, Options
from sluice.states import S


def test_max_jobs_is_the_reason_not_idle(sqlite_ws: Workspace) -> None:
    """--max-jobs N stops the launcher with work left: it must say so, not claim it was idle."""
    ws = sqlite_ws
    ws.add_app("true", "/bin/true")
    ws.add_jobs([{"name": f"j{i}", "app": "true"} for i in range(20)])
    s = Launcher(ws, Options(max_jobs=3, idle_timeout=0.5, kill_grace_s=1.0, status=False)).run()
    assert s.started == 3 and ws.count(state=S.JOB_FINISHED) == 3
    assert s.reason == "max jobs (3) reached", s.line()
    assert s.line().endswith("stopped: max jobs (3) reached")
