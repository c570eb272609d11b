"""Staging with local paths: copies, globs, links, stage-out; and both inside a real launcher run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sluice import transfers
from sluice.api import Workspace
from sluice.errors import UserError
from sluice.launcher.launcher import Launcher, Options
from sluice.states import S


def test_copy_glob_link_and_put(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for n in ("a.dat", "b.dat", "c.txt"):
        (src / n).write_text(n)
    dest = tmp_path / "dest"
    dest.mkdir()
    got = transfers.copy(str(src / "*.dat"), dest)
    assert sorted(p.name for p in got) == ["a.dat", "b.dat"] and (dest / "a.dat").read_text() == "a.dat"
    transfers.copy(f"file://{src / 'c.txt'}", dest / "renamed.txt", link=True)
    assert not (dest / "renamed.txt").is_symlink() and (dest / "renamed.txt").read_text() == "c.txt"
    out = tmp_path / "out"
    out.mkdir()
    transfers.put(dest / "*.dat", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["a.dat", "b.dat"]


def test_a_staged_file_never_dangles_and_never_lets_a_child_change_its_parents(tmp_path: Path) -> None:
    """Hard link (or clone) where the file system allows: the copy stays when the source's directory is
    cleaned, and it is read-only, so a job writing into its input cannot change its parent's output."""
    parent = tmp_path / "parent_1"
    parent.mkdir()
    (parent / "out.dat").write_text("parent's bytes")
    child = tmp_path / "child"
    child.mkdir()
    (got,) = transfers.copy(str(parent / "out.dat"), child)
    assert not got.is_symlink()
    assert not got.stat().st_mode & 0o222
    shutil.rmtree(parent)
    assert got.read_text() == "parent's bytes"


def test_missing_source_and_unknown_scheme_are_clear(tmp_path: Path) -> None:
    with pytest.raises(transfers.TransferError, match="not found"):
        transfers.copy(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(transfers.TransferError, match="no transfer method for gopher"):
        transfers.copy("gopher://x/y", tmp_path)
    with pytest.raises(UserError, match="bad stage entry"):
        transfers.entry({"dest": "x"})


def test_launcher_stages_in_from_paths_and_parents_and_stages_out(ws: Workspace, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "config.ini").write_text("temp=300\n")
    results = tmp_path / "results"
    results.mkdir()
    ws.add_app("gen", "/bin/sh -c 'cat config.ini > out_{i}.dat'")
    ws.add_app("merge", "/bin/sh -c 'cat out_*.dat > merged.txt'")
    gens = [ws.add_job(f"g{i}", app="gen", params={"i": i}, stage_in=[str(inputs / "config.ini")]) for i in range(3)]
    assert all(g.state == S.READY for g in gens)  # stage-in is real work: no fast-forward past READY
    m = ws.add_job("m", app="merge", parents=gens, stage_in=[{"parents": "out_*.dat", "layout": "flat"}],
                   stage_out=[{"src": "merged.txt", "dest": str(results)}])
    Launcher(ws, Options(idle_timeout=2, status=False)).run()
    assert ws.summary() == {"JOB_FINISHED": 4}
    assert (results / "merged.txt").read_text() == "temp=300\n" * 3
    assert sorted(p.name for p in ws.job(m.id).path.glob("out_*.dat")) == ["out_0.dat", "out_1.dat", "out_2.dat"]


def test_failed_stage_in_fails_the_job_with_the_reason(sqlite_ws: Workspace, tmp_path: Path) -> None:
    sqlite_ws.add_app("t", "/bin/true")
    j = sqlite_ws.add_job("t", app="t", stage_in=[str(tmp_path / "missing.dat")])
    Launcher(sqlite_ws, Options(idle_timeout=1, status=False)).run()
    job = sqlite_ws.job(j.id)
    assert job.state == S.FAILED and "stage-in failed" in (job.state_message or "")


def test_two_hundred_parents_one_file_name_nothing_lost(ws: Workspace, backend: str) -> None:
    """The defect: 200 unweighting jobs each wrote unweighted.dat; the merge got one file (each parent's link
    overwrote the last), summed 1 of 200 inputs, and every job ended JOB_FINISHED."""
    if backend == "mysql":
        pytest.skip("the DAG on SQLite and PostgreSQL is the issue's ask; MariaDB shares the code path")
    ws.add_app("unw", "/bin/sh -c 'echo {i} > unweighted.dat'")
    ws.add_app("merge", "/bin/sh -c 'cat */unweighted.dat | awk \"{{s += \\$1; n++}} END {{print n, s}}\" > sum.txt'")
    unws = ws.add_jobs([{"name": f"unw-{i}", "app": "unw", "params": {"i": i}} for i in range(200)])
    m = ws.add_job("merge", app="merge", parents=unws, stage_in=[{"parents": "unweighted.dat"}])
    Launcher(ws, Options(idle_timeout=2, status=False)).run()
    assert ws.summary() == {"JOB_FINISHED": 201}
    merge = ws.job(m.id)
    assert (merge.path / "sum.txt").read_text().split() == ["200", str(sum(range(200)))]
    assert len(list(merge.path.glob("unw-*_*/unweighted.dat"))) == 200
    # the parents' own files are untouched
    assert all((p.path / "unweighted.dat").read_text() == f"{i}\n" for i, p in enumerate(ws.jobs(ids=unws)))
