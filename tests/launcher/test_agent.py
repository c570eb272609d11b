"""The node agent and LocalSpawner: spawning, exits, errors, timeouts, kills, and dying with the launcher."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sluice.launcher import cengine
from sluice.launcher.agent import AgentClient, Event, LayeredEnv, LocalSpawner, Spawner

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()
    except (FileNotFoundError, ProcessLookupError):  # gone, or being reaped while read (ESRCH)
        return None


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks: with it, a recycled pid is not mistaken for the process."""
    f = _stat(pid)
    return f[19] if f else None


def alive(pid: int, started: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of someone else still answers kill(0): look at its state; under a full test run pids wrap
    # within seconds (pid_max 32768), so a known start time must match too
    f = _stat(pid)
    return f is not None and f[0] != "Z" and (started is None or f[19] == started)


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def collect(sp: Spawner, n: int, timeout: float = 20.0) -> dict[int, Event]:
    """Wait (through fileno, like the launcher) for n exit/error events."""
    got: dict[int, Event] = {}
    end = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        hint = sp.timeout_hint()
        select.select([sp.fileno()], [], [], min(hint if hint is not None else 1.0, 1.0))
        for ev in sp.poll_events():
            if ev["ev"] in ("exit", "error"):
                got[ev["id"]] = ev
    assert len(got) == n, got
    return got


@pytest.fixture(params=["local-c", "local-python", "agent"])
def spawner(request: pytest.FixtureRequest) -> Iterator[Spawner]:
    """Each behaviour on both engines of the launcher's own node and through the agent's pipe protocol."""
    sp: Spawner
    if request.param == "local-c" and not cengine.AVAILABLE:
        pytest.skip("the compiled engine was not built here")
    if request.param.startswith("local"):
        sp = LocalSpawner(kill_grace=0.5, engine=request.param.split("-")[1])
    else:
        os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
        sp = AgentClient(agent_args=["--kill-grace", "0.5"])
    sp.start()
    yield sp
    sp.close()


def test_exit_codes_cwd_and_outputs(spawner: Spawner, tmp_path: Path) -> None:
    for i in range(3):
        d = tmp_path / f"deep/job{i}"
        spawner.spawn(i, ["sh", "-c", f"pwd; echo err{i} >&2; exit {i}"], cwd=str(d),
                      env=dict(os.environ, X="1"), stdout=str(d / "out"), stderr=str(d / "err"))
    got = collect(spawner, 3)
    assert {i: ev["rc"] for i, ev in got.items()} == {0: 0, 1: 1, 2: 2}
    assert all(not ev["timed_out"] and ev["pid"] > 0 for ev in got.values())
    for i in range(3):
        d = tmp_path / f"deep/job{i}"
        assert (d / "out").read_text().strip() == str(d)
        assert (d / "err").read_text().strip() == f"err{i}"


def test_env_shell_and_shared_output(spawner: Spawner, tmp_path: Path) -> None:
    out = str(tmp_path / "both")
    spawner.spawn(7, ["echo $GREETING; echo e >&2"], shell=True, env={"GREETING": "hi", "PATH": "/usr/bin:/bin"},
                  cwd=str(tmp_path), stdout=out, stderr=out)
    assert collect(spawner, 1)[7]["rc"] == 0
    assert Path(out).read_text().split() == ["hi", "e"]


def test_layered_env_overrides_the_base_without_copying_it(spawner: Spawner, tmp_path: Path) -> None:
    """A task sees the launcher's variables plus its own, its own winning; the shared base stays untouched."""
    base = {"PATH": "/usr/bin:/bin", "SHARED": "base", "OVERRIDDEN": "base"}
    for i, extra in enumerate([{"OVERRIDDEN": "task0", "OWN": "0"}, {"OWN": "1"}, {}]):
        env = LayeredEnv(base, extra)
        assert dict(env) == {**base, **extra} and len(env) == len({**base, **extra})
        spawner.spawn(i, ["env"], env=env, cwd=str(tmp_path), stdout=str(tmp_path / f"env{i}"))
    assert all(ev["rc"] == 0 for ev in collect(spawner, 3).values())
    seen = [dict(line.split("=", 1) for line in (tmp_path / f"env{i}").read_text().splitlines()) for i in range(3)]
    assert seen[0] == {"PATH": "/usr/bin:/bin", "SHARED": "base", "OVERRIDDEN": "task0", "OWN": "0"}
    assert seen[1] == {"PATH": "/usr/bin:/bin", "SHARED": "base", "OVERRIDDEN": "base", "OWN": "1"}
    assert seen[2] == base
    assert base == {"PATH": "/usr/bin:/bin", "SHARED": "base", "OVERRIDDEN": "base"}


def test_missing_executable_is_an_error_event(spawner: Spawner, tmp_path: Path) -> None:
    spawner.spawn(1, ["/no/such/program"], cwd=str(tmp_path))
    spawner.spawn(2, ["no-such-program-anywhere"], cwd=str(tmp_path))
    spawner.spawn(3, ["true"], cwd=str(tmp_path))
    got = collect(spawner, 3)
    assert got[1]["ev"] == got[2]["ev"] == "error"
    assert "No such file" in got[1]["msg"] and "/no/such/program" in got[1]["msg"]
    assert got[3]["ev"] == "exit" and got[3]["rc"] == 0


def test_timeout_term_then_kill(spawner: Spawner, tmp_path: Path) -> None:
    spawner.spawn(1, ["sh", "-c", "trap '' TERM; sleep 30"], timeout=0.5)
    spawner.spawn(2, ["sleep", "30"], timeout=0.3)
    t = time.monotonic()
    got = collect(spawner, 2)
    assert got[1]["timed_out"] and got[1]["rc"] == -signal.SIGKILL  # ignored TERM
    assert got[2]["timed_out"] and got[2]["rc"] == -signal.SIGTERM
    assert time.monotonic() - t < 5


def test_kill_by_id_kills_the_process_group(spawner: Spawner, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    spawner.spawn(5, ["sh", "-c", f"sleep 100 & echo $! > {pidfile}; wait"])
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    grandchild = int(pidfile.read_text())
    assert alive(grandchild)
    spawner.kill(5, signal.SIGTERM)
    assert collect(spawner, 1)[5]["rc"] == -signal.SIGTERM
    assert wait_for(lambda: not alive(grandchild))


def test_local_close_kills_everything(tmp_path: Path) -> None:
    sp = LocalSpawner(kill_grace=0.3)
    ready = tmp_path / "ready"
    sp.spawn(1, ["sh", "-c", f"trap '' TERM; touch {ready}; sleep 100"])
    sp.spawn(2, ["sleep", "100"])
    assert sp.running == 2
    assert wait_for(ready.exists)
    events = sp.close()
    assert {ev["id"]: ev["rc"] for ev in events} == {1: -signal.SIGKILL, 2: -signal.SIGTERM}
    assert sp.running == 0


def _agent_with_sleep(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ, PYTHONPATH=SRC)
    agent = subprocess.Popen([sys.executable, "-m", "sluice.launcher.agent", "--kill-grace", "1"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    pidfile = tmp_path / "pid"
    assert agent.stdin is not None
    agent.stdin.write(b'{"op":"spawn","id":1,"argv":["sh","-c","echo $$ > %s; exec sleep 100"]}\n'
                      % str(pidfile).encode())
    agent.stdin.flush()
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    return agent, int(pidfile.read_text())


def test_stdin_eof_kills_everything(tmp_path: Path) -> None:
    agent, sleeper = _agent_with_sleep(tmp_path)
    assert alive(sleeper)
    assert agent.stdin is not None
    agent.stdin.close()
    assert agent.wait(10) == 0
    assert wait_for(lambda: not alive(sleeper), 5)


def test_launcher_killed_with_sigkill_kills_everything(tmp_path: Path) -> None:
    """A launcher process holding the agent's stdin dies by kill -9: the agent's tasks die too."""
    env = dict(os.environ, PYTHONPATH=SRC)
    pidfile = tmp_path / "pid"
    code = (
        "import sys, time\n"
        "from sluice.launcher.agent import AgentClient\n"
        "c = AgentClient(); c.start()\n"
        f"c.spawn(1, ['sh', '-c', 'echo $$ > {pidfile}; exec sleep 100'])\n"
        "print(c.proc.pid, flush=True); time.sleep(100)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env)
    assert launcher.stdout is not None
    agent_pid = int(launcher.stdout.readline())
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    sleeper = int(pidfile.read_text())
    marks = start_time(sleeper), start_time(agent_pid)
    launcher.kill()
    launcher.wait()
    assert wait_for(lambda: not alive(sleeper, marks[0]), 30)
    assert wait_for(lambda: not alive(agent_pid, marks[1]), 30)


def test_exit_op_reports_and_stops(tmp_path: Path) -> None:
    os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    c = AgentClient(agent_args=["--kill-grace", "0.5", "--started"])
    c.start()
    c.spawn(1, ["sleep", "100"])
    c.spawn(2, ["true"])
    evs: list[Event] = []
    # both started, and `true` has ended (a TERM from close() would otherwise race its exit)
    assert wait_for(lambda: bool(evs.extend(c.poll_events())) or (sum(e["ev"] == "started" for e in evs) == 2
                                                                  and any(e["ev"] == "exit" for e in evs)))
    evs += c.close()
    exits = {e["id"]: e["rc"] for e in evs if e["ev"] == "exit"}
    assert exits == {1: -signal.SIGTERM, 2: 0}
    assert c.proc is not None and c.proc.returncode == 0


def test_many_tasks_quickly(tmp_path: Path) -> None:
    sp = LocalSpawner()
    for i in range(200):
        d = tmp_path / str(i)
        sp.spawn(i, ["/bin/true"], cwd=str(d), stdout=str(d / "o"), stderr=str(d / "e"))
    got = collect(sp, 200)
    assert all(ev["rc"] == 0 for ev in got.values())
    sp.close()


@pytest.mark.slurm
def test_agent_on_a_slurm_node_through_srun(tmp_path: Path) -> None:
    """The agent started once through `srun -N1 -n1 -w n3 --overlap` runs tasks on n3."""
    from tests.conftest import START_SLURM as start

    from sluice.launcher.mpi import SrunExec
    if not start.exists():
        pytest.skip(f"{start} is absent")
    res = subprocess.run(["bash", str(start), "--nodes", "4"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")
    c = AgentClient(agent_args=["--kill-grace", "0.5"])
    c.start(SrunExec().agent_argv("n3", ["--time=1"]))
    out = tmp_path / "out"
    for i in range(20):
        c.spawn(i, ["sh", "-c", f"echo $SLURMD_NODENAME >> {out}"])
    got = collect(c, 20, timeout=60)
    assert all(ev["rc"] == 0 for ev in got.values())
    assert set(out.read_text().split()) == {"n3"}
    c.close()
