"""Allocation discovery from each scheduler's environment, and for real inside Slurm."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sluice.launcher.nodes import (
    Node,
    discover,
    expand_cpus_per_node,
    expand_hostlist,
    parse_qstat_end,
    parse_slurm_time,
)

SRC = str(Path(__file__).resolve().parents[2] / "src")


def no_cmd(argv: list[str]) -> str | None:
    return None


@pytest.mark.parametrize(
    "spec, hosts",
    [
        ("n1", ["n1"]),
        ("n[1-3,7]", ["n1", "n2", "n3", "n7"]),
        ("n[1-3,7],gpu[01-02]", ["n1", "n2", "n3", "n7", "gpu01", "gpu02"]),
        ("nid[0009-0011]", ["nid0009", "nid0010", "nid0011"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("a,b[5],c", ["a", "b5", "c"]),
        ("x[8-10]-ib", ["x8-ib", "x9-ib", "x10-ib"]),
    ],
)
def test_expand_hostlist(spec: str, hosts: list[str]) -> None:
    assert expand_hostlist(spec) == hosts


def test_expand_hostlist_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        expand_hostlist("n[3-1]")
    with pytest.raises(ValueError):
        expand_hostlist("n[1-2")


def test_cpus_per_node() -> None:
    assert expand_cpus_per_node("2(x3),4") == [2, 2, 2, 4]
    assert expand_cpus_per_node("64") == [64]


def test_slurm_env() -> None:
    env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "n[1-3],gpu01", "SLURM_JOB_CPUS_PER_NODE": "8(x3),16",
           "SLURM_JOB_GPUS": "0,1"}
    seen: list[list[str]] = []

    def squeue(argv: list[str]) -> str:
        seen.append(argv)
        return "2030-01-01T10:00:00\n"

    a = discover(env, run=squeue)
    assert a.kind == "slurm" and a.batch_id == "42"
    assert a.nodes == (Node("n1", 8, ("0", "1")), Node("n2", 8, ("0", "1")), Node("n3", 8, ("0", "1")),
                       Node("gpu01", 16, ("0", "1")))
    assert seen == [["squeue", "-h", "-j", "42", "-o", "%e"]]
    assert a.end_time == parse_slurm_time("2030-01-01T10:00:00")


def test_slurm_cpus_on_node_and_failed_squeue_uses_wall_time() -> None:
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "c[1-2]", "SLURM_CPUS_ON_NODE": "4"}
    a = discover(env, run=no_cmd, wall_time_min=10, now=1000.0)
    assert [n.cores for n in a.nodes] == [4, 4]
    assert a.end_time == 1000.0 + 600
    assert discover(env, run=no_cmd).end_time is None


def test_parse_slurm_time() -> None:
    assert parse_slurm_time("N/A") is None
    assert parse_slurm_time("") is None
    assert parse_slurm_time("Unknown\n") is None


def test_pbs_env(tmp_path: Path) -> None:
    nf = tmp_path / "nodefile"
    nf.write_text("x1\nx1\nx1\nx2\nx2\nx2\n")
    a = discover({"PBS_NODEFILE": str(nf), "PBS_JOBID": "9.pbs"}, run=no_cmd)
    assert a.kind == "pbs" and a.batch_id == "9.pbs"
    assert a.nodes == (Node("x1", 3), Node("x2", 3))
    assert a.end_time is None
    a = discover({"PBS_NODEFILE": str(nf), "PBS_JOBID": "9.pbs", "NCPUS": "64"}, run=no_cmd)
    assert [n.cores for n in a.nodes] == [64, 64]


def test_pbs_qstat_walltime(tmp_path: Path) -> None:
    nf = tmp_path / "nodefile"
    nf.write_text("x1\n")
    qstat = "Job Id: 9.pbs\n    Resource_List.walltime = 01:00:00\n    resources_used.walltime = 00:10:00\n"
    a = discover({"PBS_NODEFILE": str(nf), "PBS_JOBID": "9.pbs"}, run=lambda argv: qstat, now=100.0)
    assert a.end_time == 100.0 + 3000
    assert parse_qstat_end("Job Id: 1\n", 0.0) is None


def test_cobalt_env() -> None:
    env = {"COBALT_JOBID": "123", "COBALT_PARTNAME": "1-4,8", "COBALT_ENDTIME": "2000000000",
           "SLUICE_CORES_PER_NODE": "64"}
    a = discover(env, run=no_cmd)
    assert a.kind == "cobalt" and a.batch_id == "123"
    assert [n.name for n in a.nodes] == ["1", "2", "3", "4", "8"]
    assert {n.cores for n in a.nodes} == {64}
    assert a.end_time == 2000000000.0
    a = discover({"COBALT_JOBID": "5", "COBALT_JOBSIZE": "2"}, run=no_cmd)
    assert len(a.nodes) == 2 and a.end_time is None


def test_lsf_hostfile_and_launch_node(tmp_path: Path) -> None:
    hf = tmp_path / "hosts"
    hf.write_text("batch1\n" + "h1\n" * 42 + "h2\n" * 42)
    env = {"LSB_JOBID": "77", "LSB_DJOB_HOSTFILE": str(hf), "LSB_MCPU_HOSTS": "batch1 1 h1 42 h2 42"}
    a = discover(env, run=no_cmd)
    assert a.kind == "lsf" and a.batch_id == "77"
    assert a.nodes == (Node("h1", 42), Node("h2", 42))
    # without the launch-node signature every host is kept
    a = discover({"LSB_JOBID": "78", "LSB_HOSTS": "h1 h1 h2 h2"}, run=no_cmd)
    assert a.nodes == (Node("h1", 2), Node("h2", 2))


def test_local() -> None:
    a = discover({"CUDA_VISIBLE_DEVICES": "0,1"}, run=no_cmd, wall_time_min=1, now=0.0)
    assert a.kind == "local" and a.batch_id is None
    assert a.nodes == (Node(socket.gethostname(), os.cpu_count() or 1, ("0", "1")),)
    assert a.end_time == 60.0
    assert discover({"SLURMD_NODENAME": "n3", "CUDA_VISIBLE_DEVICES": ""}, run=no_cmd).nodes[0] == Node(
        "n3", os.cpu_count() or 1)


def test_allocation_end_override() -> None:
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "n1", "SLUICE_ALLOCATION_END": "1234.5"}
    assert discover(env, run=lambda argv: "2030-01-01T10:00:00", wall_time_min=5).end_time == 1234.5




@pytest.mark.slurm
def test_discover_inside_real_slurm(slurm_cluster: None) -> None:
    code = ("import json; from sluice.launcher.nodes import discover; a = discover(); "
            "print(json.dumps({'kind': a.kind, 'nodes': [n.name for n in a.nodes], 'end': a.end_time, "
            "'cores': [n.cores for n in a.nodes], 'id': a.batch_id}))")
    env = dict(os.environ, PYTHONPATH=SRC)
    res = subprocess.run(["srun", "-N", "2", "--time=1", sys.executable, "-c", code], capture_output=True,
                         text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    outs = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert len(outs) == 2
    a = outs[0]
    assert a["kind"] == "slurm" and a["id"]
    assert len(a["nodes"]) == 2 and set(a["nodes"]) <= {"n1", "n2", "n3", "n4"}
    assert all(c >= 1 for c in a["cores"])
    assert a["end"] is not None and time.time() < a["end"] < time.time() + 150
