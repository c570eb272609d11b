"""Fixtures for scheduler tests: the real local Slurm cluster, and recorded scheduler outputs."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"




def recorded(name: str) -> str:
    """A recorded scheduler output from tests/schedulers/data, without its leading '#' comment lines."""
    lines = (DATA / name).read_text().splitlines(keepends=True)
    return "".join(ln for ln in lines if not ln.startswith("#"))
