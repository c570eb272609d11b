"""Every campaign in examples/ runs as shipped, on the embedded SQLite default, through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, tmp_path: Path, **env: str) -> str:
    bindir = Path(sys.executable).parent
    e = {**os.environ, "SLUICE": str(bindir / "sluice"), "PYTHON": sys.executable, **env}
    e.pop("SLUICE_WORKSPACE", None)
    p = subprocess.run(["bash", str(EXAMPLES / script), str(tmp_path / "ws")], cwd=tmp_path, env=e,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def test_hep_chain(tmp_path: Path) -> None:
    out = run("hep/run.sh", tmp_path)
    assert "42 already there" in out  # the second submit added nothing
    assert "JOB_FINISHED   42" in out
    assert out.strip().splitlines()[-1].startswith("20 files, ")  # every unweighting job's file reached the merge


def test_ensemble_of_a_thousand(tmp_path: Path) -> None:
    out = run("ensemble/run.sh", tmp_path)
    assert "JOB_FINISHED   1000" in out
    results = list((tmp_path / "ws" / "data" / "ensemble").glob("run-*_*/result.txt"))
    assert len(results) == 1000


def test_hyperparameter_search_spawns_its_children(tmp_path: Path) -> None:
    out = run("hyperparam/run.sh", tmp_path)
    assert "JOB_FINISHED   7" in out  # search, 5 trainings it spawned, pick
    assert out.strip().splitlines()[-1].startswith("0.01 ")  # the parabola's minimum among the rates


def test_between_shot_analysis(tmp_path: Path) -> None:
    out = run("shots/run.sh", tmp_path, SHOTS="3", PERIOD="1")
    assert "every shot analysed before the next" in out


@pytest.mark.parametrize("jobs", ["6"])
def test_the_readme_demo(tmp_path: Path, jobs: str) -> None:
    out = run("demo.sh", tmp_path, DEMO_JOBS=jobs)
    assert "pi ~ 3.1" in out and f"in {jobs} jobs" in out
