"""The real console entry point in a subprocess: `python -m sluice`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def sluice(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if k != "SLUICE_WORKSPACE"}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "sluice", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=60)


def test_help_without_workspace(tmp_path: Path) -> None:
    r = sluice("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for verb in ("init", "app", "job", "ls", "rm", "dep", "submit"):
        assert verb in r.stdout
    assert r.stderr == ""


def test_errors_are_one_line(tmp_path: Path) -> None:
    r = sluice("ls", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("sluice: error: ")
    r = sluice("nonsense", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_balsam_tutorial(tmp_path: Path) -> None:
    assert sluice("init", "camp", cwd=tmp_path).returncode == 0
    ws = tmp_path / "camp"
    (ws / "myapp.py").write_text("print('hi')\n")
    r = sluice("app", "--name", "myapp", "--desc", "my application", "--exec", "myapp.py", cwd=ws)
    assert r.returncode == 0, r.stderr
    r = sluice("job", "--name", "myjob", "--workflow", "balsam_tutorial", "--application", "myapp",
               "--wall-min", "60", "--num-nodes", "1", "--ranks-per-node", "1", cwd=ws)
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr
    r = sluice("ls", cwd=tmp_path, env={"SLUICE_WORKSPACE": str(ws)})
    assert "myjob" in r.stdout and "balsam_tutorial" in r.stdout
    r = sluice("rm", "jobs", "--id", "1", "--yes", cwd=ws)
    assert r.returncode == 0 and "removed 1 job(s)" in r.stdout
