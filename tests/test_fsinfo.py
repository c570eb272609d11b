"""File-system detection (statfs through libc, /proc/self/mountinfo) and the rule that refuses one SQLite file
shared by two hosts.

Real file systems where this machine can make them: ext4 (the disk), tmpfs and overlay mounted here (root). This
kernel has no NFS client, so NFS, Lustre, GPFS and FUSE are tested through their statfs magic numbers and a
mount table copied from a real HPC login node, and the refusal through a workspace whose file system is said
to be NFS.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import insert
from tests.cli.conftest import user_error

from sluice.api import Workspace
from sluice.cli.main import cli
from sluice.errors import UserError
from sluice.store import fsinfo
from sluice.store.models import launcher_sessions

# From a login node of a Cray EX system (names changed), plus a FUSE pair and an escaped space.
MOUNTINFO = r"""22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
25 22 0:23 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw
31 22 259:2 / /var/tmp rw,relatime shared:9 - xfs /dev/nvme0n1p2 rw,attr2,inode64
120 22 0:56 / /home rw,relatime shared:60 - autofs systemd-1 rw,fd=54,pgrp=1,timeout=0,minproto=5
121 120 0:61 / /home rw,relatime shared:61 - nfs4 home.site.org:/export/home rw,vers=4.2,rsize=1048576
130 22 0:70 / /lus/scratch rw,relatime shared:70 - lustre 10.1.0.1@o2ib:/scratch rw,flock,lazystatfs
140 22 0:80 / /gpfs/proj rw,relatime shared:80 - gpfs proj rw
150 22 0:90 / /mnt/remote rw,nosuid,nodev,relatime shared:90 - fuse.sshfs me@dtn:/data rw,user_id=1000
151 22 0:91 / /mnt/view rw,nosuid,nodev,relatime shared:91 - fuse.bindfs /data rw,user_id=0
160 22 0:95 / /mnt/my\040disk rw,relatime shared:95 - ext4 /dev/sdb1 rw
161 22 0:96 / /beegfs rw,relatime shared:96 - beegfs beegfs_nodev rw,cfgFile=/etc/beegfs/beegfs-client.conf
this line is not a mount line
"""


def test_mountinfo_parses_a_real_table() -> None:
    mounts = fsinfo.parse_mountinfo(MOUNTINFO)
    assert len(mounts) == 11
    assert fsinfo.Mount("/mnt/my disk", "ext4", "/dev/sdb1") in mounts  # \040 is a space


@pytest.mark.parametrize(("path", "fstype", "shared"), [
    ("/home/me/scan/sluice.db", "nfs4", True),  # NFS mounted over the autofs trigger: the later mount wins
    ("/lus/scratch/me/scan", "lustre", True),
    ("/gpfs/proj/x", "gpfs", True),
    ("/mnt/remote/ws", "fuse.sshfs", True),
    ("/mnt/view/ws", "fuse.bindfs", False),
    ("/mnt/my disk/ws", "ext4", False),
    ("/beegfs/ws", "beegfs", True),
    ("/var/tmp/ws", "xfs", False),
    ("/dev/shm/ws", "tmpfs", False),
    ("/homework/ws", "overlay", False),  # /home is not a prefix of /homework
])
def test_the_mount_of_a_path_and_whether_it_is_shared(path: str, fstype: str, shared: bool) -> None:
    m = fsinfo.mount_of(path, fsinfo.parse_mountinfo(MOUNTINFO))
    assert m is not None and m.fstype == fstype
    assert fsinfo.classify(None, m).shared is shared


@pytest.mark.parametrize(("magic", "name", "shared"), [
    (0x6969, "nfs", True), (0x0BD00BD0, "lustre", True), (0x47504653, "gpfs", True), (0xFF534D42, "cifs", True),
    (0xFE534D42, "smb2", True), (0x19830326, "beegfs", True), (0x00C36400, "ceph", True), (0x65735546, "fuse", True),
    (0xEF53, "ext4", False), (0x01021994, "tmpfs", False), (0x794C7630, "overlay", False), (0x58465342, "xfs", False),
])
def test_statfs_magic_numbers(magic: int, name: str, shared: bool) -> None:
    fs = fsinfo.classify(magic, None)
    assert (fs.name, fs.shared) == (name, shared)


def test_statfs_speaks_for_the_path_and_mountinfo_names_the_fuse_subtype() -> None:
    bindfs = fsinfo.Mount("/mnt/view", "fuse.bindfs", "/data")
    assert fsinfo.classify(fsinfo.FUSE, bindfs).shared is False
    assert fsinfo.classify(fsinfo.FUSE, fsinfo.Mount("/x", "fuse.sshfs", "me@h:/d")).shared is True
    # a stale mount table (the automount not yet shown) cannot make an NFS path look local, nor the reverse
    assert fsinfo.classify(0x6969, fsinfo.Mount("/home", "autofs", "systemd-1")).shared is True
    assert fsinfo.classify(0xEF53, fsinfo.Mount("/home", "nfs4", "h:/e")).shared is False
    assert fsinfo.classify(None, None).shared is False  # nothing known: never block


def test_statfs_on_this_machine_agrees_with_its_mount_table(tmp_path: Path) -> None:
    assert fsinfo.statfs_magic("/dev/shm") == 0x01021994
    disk = fsinfo.fs_of(tmp_path, mountinfo=Path("/proc/self/mountinfo").read_text())
    m = fsinfo.mount_of(tmp_path, fsinfo.parse_mountinfo(Path("/proc/self/mountinfo").read_text()))
    assert m is not None and disk.name == m.fstype and disk.shared is False
    assert fsinfo.fs_of(tmp_path / "not" / "made" / "yet").magic == fsinfo.statfs_magic(tmp_path)
    assert fsinfo.statfs_magic(tmp_path / "missing") is None


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[list[Path]]:
    """Mount points made here; unmounted after the test."""
    made: list[Path] = []
    yield made
    for p in reversed(made):
        subprocess.run(["umount", str(p)], capture_output=True)


def _mount(made: list[Path], *args: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount here: {proc.stderr.strip()}")
    made.append(Path(args[-1]))


def test_a_fresh_tmpfs_with_a_space_in_its_path(tmp_path: Path, mounted: list[Path]) -> None:
    point = tmp_path / "scratch space"
    point.mkdir()
    _mount(mounted, "-t", "tmpfs", "-o", "size=4m", "none", str(point))
    fs = fsinfo.fs_of(point / "ws", mountinfo=Path("/proc/self/mountinfo").read_text())
    assert fs.magic == 0x01021994 and fs.name == "tmpfs" and not fs.shared
    assert fs.mount is not None and fs.mount.point == str(point)  # found through the \040 escape


def test_an_overlay_mount(tmp_path: Path, mounted: list[Path]) -> None:
    for d in ("lower", "upper", "work", "merged"):
        (tmp_path / d).mkdir()
    _mount(mounted, "-t", "overlay", "overlay", "-o",
           f"lowerdir={tmp_path / 'lower'},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}",
           str(tmp_path / "merged"))
    fs = fsinfo.fs_of(tmp_path / "merged", mountinfo=Path("/proc/self/mountinfo").read_text())
    assert (fs.magic, fs.name, fs.shared) == (0x794C7630, "overlay", False)


def test_a_real_fuse_mount(tmp_path: Path, mounted: list[Path]) -> None:
    """bindfs (FUSE) showing a local directory: statfs says FUSE, and it is as local as what it shows."""
    if shutil.which("bindfs") is None:
        pytest.skip("bindfs is not installed (apt-get install bindfs)")
    (tmp_path / "src").mkdir()
    (tmp_path / "view").mkdir()
    _mount(mounted, "-t", "fuse.bindfs", str(tmp_path / "src"), str(tmp_path / "view"))
    fs = fsinfo.fs_of(tmp_path / "view" / "ws")
    assert fs.magic == fsinfo.FUSE and fs.name.startswith("fuse") and fs.shared is False
    assert fs.mount is not None and fs.mount.source == str(tmp_path / "src")
    nfs_source = fsinfo.Mount(str(tmp_path / "view"), "fuse", "me@dtn:/data")  # sshfs-like: a remote source
    assert fsinfo.classify(fsinfo.FUSE, nfs_source).shared is True


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"SLURM_JOB_ID": "12", "SLURM_SUBMIT_HOST": "login1"}, "login1"),
    ({"SLURM_JOB_ID": "12", "SLURM_SUBMIT_HOST": "nid001.site.org"}, None),  # submitted from here
    ({"PBS_JOBID": "9.pbs", "PBS_O_HOST": "login2.site.org"}, "login2.site.org"),
    ({"LSB_JOBID": "7", "LSB_SUB_HOST": "NID001"}, None),
    ({"COBALT_JOBID": "5"}, "the login node"),
    ({"SLURM_SUBMIT_HOST": "login1"}, None),  # no job id: not in a batch job
])
def test_a_compute_node_is_a_batch_job_submitted_from_another_host(env: dict[str, str], expected: str) -> None:
    assert fsinfo.submit_host(env, "nid001") == expected


NFS = fsinfo.FsInfo("nfs4", True, 0x6969, fsinfo.Mount("/home", "nfs4", "home:/export"))
EXT4 = fsinfo.FsInfo("ext4", False, 0xEF53)


def test_the_rule_blocks_only_a_second_host_on_a_shared_file_system() -> None:
    def why(fs: fsinfo.FsInfo, sub: str | None, others: list[tuple[int, str]]) -> str | None:
        return fsinfo.refusal(fs, "/home/me/ws/sluice.db", "login1", submitted_from=sub, others=others)

    assert why(NFS, None, []) is None  # one user on an NFS home, one host: fine
    assert why(EXT4, "login1", [(3, "nid7")]) is None  # a local disk is never shared
    line = why(NFS, "login2", [])
    assert line and "sluice dbserver start" in line and "login2" in line and "\n" not in line
    line = why(NFS, None, [(3, "nid7")])
    assert line and "launcher session 3 on nid7" in line and "home:/export on /home" in line


def _session(ws: Workspace, host: str, *, age: float = 0.0, ended: bool = False) -> None:
    now = time.time()
    with ws.write() as conn:
        conn.execute(insert(launcher_sessions).values(host=host, pid=1, job_mode="serial", started_at=now - age,
                                                      heartbeat_at=now - age, ended_at=now if ended else None))


def test_opening_an_sqlite_workspace_that_a_second_host_uses(sqlite_ws: Workspace,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "COBALT_JOBID"):
        monkeypatch.delenv(var, raising=False)
    path = sqlite_ws.path
    Workspace.open(path)  # the real file system: local, fine
    monkeypatch.setattr(fsinfo, "fs_of", lambda _p, mountinfo=None: NFS)
    Workspace.open(path)  # NFS, this host alone: fine
    _session(sqlite_ws, "nid0042", age=600)  # a launcher that died long ago on a compute node
    _session(sqlite_ws, "elsewhere", ended=True)
    Workspace.open(path)
    _session(sqlite_ws, "nid0042")
    with pytest.raises(UserError, match=r"launcher session 3 on nid0042 .*`sluice dbserver start"):
        Workspace.open(path)
    res = CliRunner().invoke(cli, ["-w", str(path), "app", "add", "x", "--command", "true"])
    user_error(res, "sluice dbserver start", "nfs4")
    with sqlite_ws.write() as conn:
        conn.execute(launcher_sessions.update().values(ended_at=time.time()))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_SUBMIT_HOST", "login-other")
    with pytest.raises(UserError, match="batch job submitted from login-other"):
        Workspace.open(path)


def test_the_check_costs_microseconds_on_a_local_disk(tmp_path: Path) -> None:
    fsinfo.fs_of(tmp_path)
    t = time.perf_counter()
    for _ in range(1000):
        fsinfo.fs_of(tmp_path)
    assert (time.perf_counter() - t) / 1000 < 0.001
