"""MPI launcher command lines, and real runs of a C MPI program through mpiexec.mpich and srun."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sluice.launcher.mpi import (
    AprunExec,
    JsrunExec,
    LauncherNotFound,
    MPICHExec,
    OpenMPIExec,
    SrunExec,
    choose,
)

HELLO_C = r"""
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int rank, size; char host[256];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    gethostname(host, sizeof host);
    printf("rank %d of %d node %s\n", rank, size, getenv("SLURMD_NODENAME") ? getenv("SLURMD_NODENAME") : host);
    MPI_Finalize();
    return 0;
}
"""


def test_mpich_argv() -> None:
    m = MPICHExec()
    assert m.argv(["a.out", "-x"], ["n1", "n2"], 4, 2, 0, {"A": "1"}) == [
        "mpiexec.mpich", "-n", "8", "-ppn", "4", "-hosts", "n1,n2", "-genv", "A", "1", "a.out", "-x"]
    assert m.agent_argv("n3", ["py", "-m", "agent"]) == ["mpiexec.mpich", "-n", "1", "-hosts", "n3", "py", "-m",
                                                         "agent"]


def test_openmpi_argv() -> None:
    m = OpenMPIExec(allow_root=False)
    assert m.argv(["a.out"], ["n1", "n2"], 2, 1, 0, {"A": "1,2"}) == [
        "mpiexec.openmpi", "--host", "n1:2,n2:2", "-n", "4", "-x", "A=1,2", "a.out"]
    assert OpenMPIExec(allow_root=True).agent_argv("n1", ["x"]) == [
        "mpiexec.openmpi", "--allow-run-as-root", "--host", "n1", "-n", "1", "x"]


def test_srun_argv() -> None:
    m = SrunExec()
    assert m.argv(["a.out"], ["n1", "n2"], 2, 3, 1, {"A": "1"}) == [
        "srun", "-N", "2", "-n", "4", "--ntasks-per-node", "2", "-w", "n1,n2", "--cpus-per-task", "3",
        "--overlap", "--export=ALL", "--gpus-per-task", "1", "--mpi=pmi2", "a.out"]
    assert SrunExec(mpi=None).argv(["a"], ["n1"], 1, 1, 0, {})[-2:] == ["--export=ALL", "a"]
    assert m.agent_argv("n4", ["agent"]) == ["srun", "-N1", "-n1", "-w", "n4", "--overlap", "--export=ALL",
                                             "agent"]


def test_aprun_and_jsrun_argv() -> None:
    assert AprunExec().argv(["a"], ["1", "2"], 64, 2, 0, {"A": "1"}) == [
        "aprun", "-n", "128", "-N", "64", "-d", "2", "-L", "1,2", "-e", "A=1", "a"]
    assert AprunExec().agent_argv("17", ["x"]) == ["aprun", "-n", "1", "-N", "1", "-L", "17", "x"]
    assert JsrunExec().argv(["a"], ["h1", "h2"], 6, 7, 1, {"A": "1"}) == [
        "jsrun", "-n", "12", "-r", "6", "-a", "1", "-c", "7", "-g", "1", "-E", "A=1", "a"]
    assert JsrunExec().agent_argv("h1", ["x"])[:3] == ["jsrun", "-n", "1"]


def test_choose() -> None:
    everything = lambda b: f"/usr/bin/{b}"  # noqa: E731
    nothing = lambda b: None  # noqa: E731
    only = lambda *names: (lambda b: f"/bin/{b}" if b in names else None)  # noqa: E731
    assert isinstance(choose("slurm", {"SLURM_JOB_ID": "1"}, everything), SrunExec)
    assert isinstance(choose("local", {"SLURM_JOB_ID": "1"}, everything), SrunExec)  # inside Slurm
    assert isinstance(choose("local", {}, everything), MPICHExec)
    assert isinstance(choose("pbs", {}, only("mpiexec.openmpi")), OpenMPIExec)
    m = choose("pbs", {}, only("mpiexec"))
    assert isinstance(m, MPICHExec) and m.binary == "mpiexec"
    assert isinstance(choose("cobalt", {}, everything), AprunExec)
    assert isinstance(choose("lsf", {}, everything), JsrunExec)
    assert isinstance(choose("openmpi", {"SLURM_JOB_ID": "1"}, everything), OpenMPIExec)  # by name
    with pytest.raises(LauncherNotFound, match="srun"):
        choose("slurm", {"SLURM_JOB_ID": "1"}, nothing)
    with pytest.raises(LauncherNotFound, match="mpiexec.mpich"):
        choose("local", {}, nothing)
    with pytest.raises(ValueError, match="unknown"):
        choose("condor", {}, everything)


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mpi")
    (d / "hello.c").write_text(HELLO_C)
    compile_ = ["mpicc.mpich", "-o", str(d / "hello"), str(d / "hello.c")]
    if not shutil.which("mpicc.mpich") or subprocess.run(compile_, capture_output=True).returncode != 0:
        # start-slurm.sh installs the mpich runtime but not its headers (libmpich-dev)
        subprocess.run(["apt-get", "install", "-y", "-qq", "mpich", "libmpich-dev"], check=True,
                       capture_output=True, timeout=600)
        subprocess.run(compile_, check=True, timeout=120)
    return d / "hello"


def ranks(out: str) -> set[tuple[int, int, str]]:
    return {(int(r), int(s), n) for r, s, n in re.findall(r"rank (\d+) of (\d+) node (\S+)", out)}


def test_real_mpich_two_ranks_local(hello: Path) -> None:
    import socket

    host = socket.gethostname()
    argv = MPICHExec().argv([str(hello)], [host], 2, 1, 0, {"HELLO": "1"})
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    got = ranks(res.stdout)
    assert {(r, s) for r, s, _ in got} == {(0, 2), (1, 2)}




@pytest.mark.slurm
def test_real_srun_two_nodes(hello: Path, slurm_cluster: None) -> None:
    """srun -N 2 with --mpi=pmi2 inside a fresh allocation: one world of 2 across two nodes."""
    inner = SrunExec().argv([str(hello)], ["n1", "n2"], 1, 1, 0, {})
    res = subprocess.run(["salloc", "-N", "2", "-w", "n1,n2", "--time=1", *inner], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ))
    assert res.returncode == 0, res.stderr
    got = ranks(res.stdout)
    assert got == {(0, 2, "n1"), (1, 2, "n2")}, res.stdout + res.stderr
