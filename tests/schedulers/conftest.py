"""Fixtures for scheduler tests: the real local Slurm cluster, and recorded scheduler outputs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.conftest import START_SLURM  # noqa: E402,F401

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A 4-node Slurm cluster on this host (idempotent start; each xdist worker may call it)."""
    if not START_SLURM.exists():
        pytest.skip(f"{START_SLURM} is absent: no local Slurm cluster to test against")
    proc = subprocess.run(["bash", str(START_SLURM), "--nodes", "4"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"start-slurm.sh failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def recorded(name: str) -> str:
    """A recorded scheduler output from tests/schedulers/data, without its leading '#' comment lines."""
    lines = (DATA / name).read_text().splitlines(keepends=True)
    return "".join(ln for ln in lines if not ln.startswith("#"))
