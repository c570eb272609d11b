"""`bench/bench_scale.py` is how bench/README.md's issue-14 figures are reproduced: a small run of each shape
must still print, on its last line, the rate through the control plane, the utilization, the launcher's CPU per
job, and that every job ran exactly once (read from the events)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_scale.py"


def last_line(*args: str, tmp: Path) -> str:
    res = subprocess.run([sys.executable, str(BENCH), "--dir", str(tmp), *args], capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("shape", [["--duration", "0.2", "--jobs", "600"], ["--jobs", "3000", "--launchers", "2"]])
def test_a_serial_run_reports_rate_utilization_cpu_and_exactly_once(tmp_path: Path, shape: list[str]) -> None:
    line = last_line("--nodes", "8", "--cores", "8", *shape, tmp=tmp_path)
    assert re.search(r"\d+ jobs/s over", line), line
    assert re.search(r"slot utilization [\d.]+% steady state", line), line
    assert re.search(r"launcher CPU [\d.]+ us/job", line), line
    assert "exactly once: yes" in line, line


def test_an_mpi_mix_reports_node_utilization_against_its_ideal_bound(tmp_path: Path) -> None:
    line = last_line("--nodes", "1024", "--cores", "4", "--jobs", "40", "--mpi-mix", "--duration", "0.3",
                     tmp=tmp_path)
    m = re.search(r"node utilization ([\d.]+)% vs ideal bound ([\d.]+)%", line)
    assert m and 0 < float(m.group(1)) <= float(m.group(2)) <= 100, line
    assert "exactly once: yes" in line, line
