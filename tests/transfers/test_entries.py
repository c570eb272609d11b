"""Stage entries are checked when a job is added: one clear line, nothing written; and planned without loss."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.api import Workspace
from sluice.errors import UserError
from sluice.transfers import TransferError
from sluice.transfers.entries import Entry, Parent, plan_in, plan_out, stage_in, stage_out


@pytest.mark.parametrize(("entry", "fragment"), [
    ("ftp://host/x", "unknown URL scheme 'ftp'"),
    ("http://", "names no host"),
    ("globus:///path", "names no host"),
    ("https://example.org/", "names no file"),
    ({"src": "/data/x", "dest": "/etc/passwd"}, "outside the job's directory"),
    ({"src": "/data/x", "dest": "../../x"}, "outside the job's directory"),
    ({"parents": "../*.dat"}, "outside the job's directory"),
    ({"parents": "*.dat", "layout": "pile"}, "layout must be one of"),
    ({"src": "/data/x", "checksum": "crc:12"}, "bad checksum"),
    ({"src": "/data/x", "size": 3}, "a stage-in entry takes"),
    (7, "give a URL"),
])
def test_bad_stage_in_entries_are_refused_with_the_entry_named(entry: object, fragment: str) -> None:
    with pytest.raises(UserError, match="stage_in\\[0\\]") as e:
        stage_in([entry])
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_good_entries_of_every_kind() -> None:
    got = stage_in(["/abs/a.dat", "host:/x/b.dat", "https://h/c.dat", "globus://ep-1/d", "file:///e",
                    {"src": "rsync://h/f", "dest": "in/f", "checksum": "sha256:" + "AB" * 32},
                    {"parents": "*.dat", "layout": "flat"}])
    assert got[5] == Entry("rsync://h/f", "in/f", checksum="sha256:" + "ab" * 32)
    assert got[6] == Entry("*.dat", None, parents=True, layout="flat")
    out = stage_out(["host:/results/merged.txt", {"src": "*.log", "dest": "/results/"}])
    assert out == [Entry("merged.txt", "host:/results/merged.txt"), Entry("*.log", "/results/")]
    with pytest.raises(UserError, match="ends in '/'"):
        stage_out(["host:/results/"])


def test_a_bad_entry_writes_nothing(sqlite_ws: Workspace) -> None:
    sqlite_ws.add_app("t", "/bin/true")
    with pytest.raises(UserError, match="unknown URL scheme"):
        sqlite_ws.add_jobs([{"name": "a", "app": "t", "stage_in": ["/ok"]},
                            {"name": "b", "app": "t", "stage_in": ["gopher://h/x"]}])
    assert sqlite_ws.count() == 0


def _parents(tmp_path: Path, n: int, name: str = "unweighted.dat") -> list[Parent]:
    out = []
    for i in range(n):
        d = tmp_path / f"unw{i}_{100 + i}"
        d.mkdir()
        (d / name).write_text(f"{i}\n")
        out.append(Parent(100 + i, f"unw{i}", d))
    return out


def test_two_hundred_parents_with_one_file_name_land_side_by_side(tmp_path: Path) -> None:
    """The defect: each parent's link overwrote the previous one, and the merge summed 1 of 200 inputs."""
    parents = _parents(tmp_path, 200)
    job = tmp_path / "merge"
    items = plan_in(stage_in([{"parents": "unweighted.dat"}]), job, parents)
    assert len({i.dest for i in items}) == 200
    assert items[7].dest == str(job / "unw7_107" / "unweighted.dat")


def test_flat_layout_refuses_to_overwrite(tmp_path: Path) -> None:
    parents = _parents(tmp_path, 2)
    with pytest.raises(TransferError, match=r"unw0 \(100\) and unw1 \(101\) both give unweighted.dat"):
        plan_in(stage_in([{"parents": "unweighted.dat", "layout": "flat"}]), tmp_path / "m", parents)


def test_a_parent_without_the_file_fails_the_stage_in(tmp_path: Path) -> None:
    parents = _parents(tmp_path, 3)
    (parents[1].path / "unweighted.dat").unlink()
    with pytest.raises(TransferError, match=r"parent unw1 \(101\) has no file matching"):
        plan_in(stage_in([{"parents": "*.dat"}]), tmp_path / "m", parents)


def test_stage_out_items_send_the_jobs_files(tmp_path: Path) -> None:
    (item,) = plan_out(stage_out(["host:/r/out.txt"]), tmp_path)
    assert (item.src, item.dest, item.put) == (str(tmp_path / "out.txt"), "host:/r/out.txt", True)
