"""Happy paths of every verb, and Balsam's command lines exactly as its users type them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from sluice.api import Workspace

from .conftest import Run, add_sim, lines, ok, snapshot, user_error


def test_init_creates_workspace_and_says_what_next(run: Run, tmp_path: Path) -> None:
    r = ok(run("init", str(tmp_path / "camp"), "--scheduler", "slurm", env={"SLUICE_WORKSPACE": None}))
    assert (tmp_path / "camp" / "sluice.toml").is_file()
    assert "Created sluice workspace" in r.stdout and "sluice app add" in r.stdout
    assert 'scheduler = "slurm"' in (tmp_path / "camp" / "sluice.toml").read_text()
    user_error(run("init", str(tmp_path / "camp")), "already a sluice workspace")


def test_balsam_app_form(run: Run, ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myapp.py").write_text("print('hello')\n")
    ok(run("app", "--name", "myapp", "--desc", "my application", "--exec", "myapp.py"))
    a = ws.app("myapp")
    assert a.command == f"{sys.executable} {tmp_path / 'myapp.py'}"
    assert a.description == "my application"
    ok(run("app", "--name", "hello", "--exec", "echo hello"))
    assert ws.app("hello").command == "echo hello"


def test_balsam_job_line(run: Run, ws: Workspace) -> None:
    ws.add_app("myapp", "python myapp.py")
    r = ok(run("job", "--name", "myjob", "--workflow", "balsam_tutorial", "--application", "myapp",
               "--wall-min", "60", "--num-nodes", "1", "--ranks-per-node", "1"))
    jid = int(r.stdout.strip())
    j = ws.job(jid)
    assert (j.name, j.workflow, j.app, j.wall_time_min, j.num_nodes, j.ranks_per_node) == (
        "myjob", "balsam_tutorial", "myapp", 60.0, 1, 1)


def test_app_verbs(run: Run, ws: Workspace) -> None:
    ok(run("app", "add", "sim", "--command", "simulate --temp {temp}", "--desc", "MD", "--env", "OMP=4",
           "--on-error", "fail", "--preprocess", "prep.sh"))
    a = ws.app("sim")
    assert (a.environment, a.on_error, a.preprocess, a.parameters) == ({"OMP": "4"}, "fail", "prep.sh", ["temp"])
    listed = json.loads(ok(run("app", "ls", "--json")).stdout)
    assert [x["name"] for x in listed] == ["sim"] and listed[0]["parameters"] == ["temp"]
    assert "simulate --temp {temp}" in ok(run("app", "ls")).stdout
    assert json.loads(ok(run("app", "show", "sim", "--json")).stdout)["description"] == "MD"
    ok(run("app", "modify", "sim", "--desc", "molecular dynamics", "--shell"))
    assert ws.app("sim").description == "molecular dynamics" and ws.app("sim").shell
    assert "sim" in ok(run("ls", "apps")).stdout
    ok(run("app", "rm", "sim"))
    assert ws.apps() == []
    ws.add_app("other", "x")
    ok(run("rm", "apps", "--name", "other"))  # Balsam's form
    assert ws.apps() == []


def test_job_with_every_option(run: Run, ws: Workspace) -> None:
    add_sim(ws)
    parent = ws.add_job("p", app="sim", params={"temp": 1})
    r = ok(run("job", "--name", "t300", "--app", "sim", "--workflow", "scan", "--wall-time", "01:30:00",
               "--num-nodes", "2", "--ranks-per-node", "4", "--threads-per-rank", "2", "--gpus-per-rank", "1",
               "--param", "temp=300", "--args", "--verbose 'a b'", "--env", "A=1", "--tag", "kind=md",
               "--data", '{"x": [1, 2]}', "--max-retries", "5", "--parent", str(parent.id),
               "--stage-in", "file:///tmp/in.dat", "--stage-out", "file:///tmp/out", "--queue", "debug",
               "--machine", "theta", "--json"))
    d = json.loads(r.stdout)
    j = ws.job(d["id"])
    assert j.params == {"temp": 300} and j.args == ["--verbose", "a b"]
    assert (j.wall_time_min, j.num_nodes, j.ranks_per_node, j.threads_per_rank, j.gpus_per_rank) == (90, 2, 4, 2, 1)
    assert (j.environment, j.tags, j.data, j.max_retries) == ({"A": "1"}, {"kind": "md"}, {"x": [1, 2]}, 5)
    assert (j.stage_in, j.stage_out, j.queue, j.machine) == (["file:///tmp/in.dat"], ["file:///tmp/out"],
                                                            "debug", "theta")
    assert [p.id for p in j.parents] == [parent.id] and j.state == "AWAITING_PARENTS"


def test_ls_columns_filters_json_summary(run: Run, ws: Workspace) -> None:
    add_sim(ws)
    a = ws.add_job("a1", app="sim", params={"temp": 1}, workflow="w1", tags={"k": "x"})
    b = ws.add_job("a2", app="sim", params={"temp": 2}, workflow="w1", parents=[a])
    c = ws.add_job("c", app="sim", params={"temp": 3}, workflow="w2")
    out = ok(run("ls")).stdout
    header = lines(out)[0].split()
    assert header == ["job_id", "name", "workflow", "application", "state"]
    assert len(lines(out)) == 2 + 3  # header, rule, rows
    wide = lines(ok(run("ls", "--wide")).stdout)[0]
    for col in ("nodes", "ranks", "retries", "session", "state message"):
        assert col in wide

    def ids(*args: str) -> list[int]:
        return [x["id"] for x in json.loads(ok(run("ls", "--json", *args)).stdout)]

    assert ids() == [a.id, b.id, c.id]
    assert ids("--workflow", "w1") == [a.id, b.id]
    assert ids("--wf", "w2") == [c.id]
    assert ids("--state", "awaiting_parents") == [b.id]
    assert ids("--name", "a*") == [a.id, b.id]
    assert ids("--tag", "k=x") == [a.id]
    assert ids("--id", str(c.id), "--id", str(a.id)) == [a.id, c.id]
    assert ids("--app", "sim", "--limit", "2") == [a.id, b.id]
    r = run("ls", "--limit", "1")
    assert "showing the first 1 of 3 jobs" in r.stderr and len(lines(r.stdout)) == 3
    summary = json.loads(ok(run("ls", "--summary", "--json")).stdout)
    assert summary == ws.summary() and sum(summary.values()) == 3
    assert "total" in ok(run("ls", "--summary")).stdout


def test_tree_and_dep(run: Run, ws: Workspace) -> None:
    add_sim(ws)
    top = ws.add_job("top", app="sim", params={"temp": 1})
    left = ws.add_job("left", app="sim", params={"temp": 1}, parents=[top])
    right = ws.add_job("right", app="sim", params={"temp": 1})
    bottom = ws.add_job("bottom", app="sim", params={"temp": 1}, parents=[left])
    r = ok(run("dep", str(top.id), "right"))
    assert f"job {right.id} now waits for job {top.id}" in r.stdout
    ok(run("dep", "right", str(bottom.id)))
    assert {p.id for p in ws.job(bottom.id).parents} == {left.id, right.id}
    assert ws.job(right.id).state == "AWAITING_PARENTS"
    tree = ok(run("ls", "--tree")).stdout
    assert tree.count("bottom") == 2 and tree.count("top") == 1  # once per parent
    d = json.loads(ok(run("ls", "--tree", "--json")).stdout)
    assert sorted(map(tuple, d["edges"])) == sorted(ws.edges([top.id, left.id, right.id, bottom.id]))


def test_mkchild_defaults_to_parents_workflow(run: Run, ws: Workspace) -> None:
    add_sim(ws)
    p = ws.add_job("p", app="sim", params={"temp": 1}, workflow="scan")
    r = ok(run("mkchild", str(p.id), "--name", "kid", "--application", "sim", "--param", "temp=2"))
    kid = ws.job(int(r.stdout))
    assert kid.workflow == "scan" and [x.id for x in kid.parents] == [p.id] and kid.state == "AWAITING_PARENTS"
    r = ok(run("mkchild", "scan/p", "--name", "kid2", "--app", "sim", "-p", "temp=3", "--workflow", "other"))
    assert ws.job(int(r.stdout)).workflow == "other"


def test_show_and_history(run: Run, ws: Workspace) -> None:
    add_sim(ws)
    p = ws.add_job("p", app="sim", params={"temp": 1}, workflow="scan")
    k = ws.add_job("k", app="sim", params={"temp": 2}, workflow="scan", parents=[p])
    d = json.loads(ok(run("show", "scan/k", "--json")).stdout)
    assert d["id"] == k.id and d["parents"][0]["id"] == p.id and d["path"].endswith(f"k_{k.id}")
    assert [e["to_state"] for e in d["history"]] == ["AWAITING_PARENTS"]
    text = ok(run("show", str(p.id))).stdout
    assert "PREPROCESSED" in text and "history" in text and f"{k.id} k" in text
    evs = json.loads(ok(run("history", str(p.id), "--json")).stdout)
    assert [e["to_state"] for e in evs] == ["READY", "STAGED_IN", "PREPROCESSED"]
    assert "CREATED → READY" in ok(run("history", str(p.id))).stdout


def test_modify(run: Run, ws: Workspace) -> None:
    add_sim(ws)
    j = ws.add_job("j", app="sim", params={"temp": 1})
    ok(run("modify", str(j.id), "--set", "num_nodes=4", "--set", "wall_time_min=01:00:00",
           "--set", 'params={"temp": 7}', "--set", "tags={\"a\": \"b\"}", "--set", "queue=debug"))
    m = ws.job(j.id)
    assert (m.num_nodes, m.wall_time_min, m.params, m.tags, m.queue) == (4, 60, {"temp": 7}, {"a": "b"}, "debug")
    ok(run("killjob", str(j.id)))
    ok(run("modify", str(j.id), "--set", "state=RESTART_READY"))
    assert ws.job(j.id).state == "RESTART_READY"


def test_rm_forms(run: Run, ws: Workspace) -> None:
    add_sim(ws)
    jobs = [ws.add_job(f"j{i}", app="sim", params={"temp": i}, workflow="w") for i in range(4)]
    r = ok(run("rm", "jobs", "--id", str(jobs[0].id), input="y\n"))  # Balsam's form, confirmed
    assert "Remove 1 job(s)?" in r.stderr and ws.count() == 3
    r = run("rm", "jobs", "--id", str(jobs[1].id), input="n\n")
    assert r.exit_code == 1 and ws.count() == 3
    ok(run("rm", "--name", "j2", "--yes"))
    assert ws.count() == 2
    ws.set_state(jobs[3].id, "RUNNING", by_launcher=True)  # as a launcher would
    before = snapshot(ws)
    user_error(run("rm", "--all", "--yes"), "RUNNING")
    assert snapshot(ws) == before
    ok(run("rm", "--all", "--yes", "--force"))
    assert ws.count() == 0


def test_killjob_recursive(run: Run, ws: Workspace) -> None:
    add_sim(ws)
    a = ws.add_job("a", app="sim", params={"temp": 1})
    b = ws.add_job("b", app="sim", params={"temp": 1}, parents=[a])
    c = ws.add_job("c", app="sim", params={"temp": 1}, parents=[b])
    r = ok(run("killjob", str(a.id), "--recursive"))
    assert "killed 3 job(s)" in r.stdout
    assert {ws.job(x.id).state for x in (a, b, c)} == {"USER_KILLED"}


def test_qsub(run: Run, sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = sqlite_ws
    r = ok(run("qsub", "--name", "hello", "-n", "2", "--wall-min", "10", "echo", "hello", "{world}", "-n"))
    j = ws.job(int(r.stdout))
    assert (j.name, j.num_nodes, j.wall_time_min) == ("hello", 2, 10)
    app = ws.app(j.app)
    assert app.name.startswith("qsub-") and not app.shell and app.parameters == []
    again = ws.job(int(ok(run("qsub", "echo", "hello", "{world}", "-n")).stdout))
    assert again.app == j.app and again.name == "echo"  # the app is reused
    piped = ws.job(int(ok(run("qsub", "grep -c x in.txt > count.txt")).stdout))
    assert ws.app(piped.app).shell and piped.name == "grep"
    script = tmp_path / "run.sh"
    script.write_text("echo hi\n")
    s = ws.job(int(ok(run("qsub", "--script", str(script))).stdout))
    assert s.name == "run" and ws.app(s.app).command == f"/bin/sh {script}"
    user_error(run("qsub"), "give a command")


def test_db_upgrade_when_current(run: Run, ws: Workspace) -> None:
    assert "up to date" in ok(run("db", "upgrade")).stdout
    assert "current" in ok(run("db", "status")).stdout


def test_help_everywhere(run: Run) -> None:
    from sluice.cli.main import COMMANDS

    top = ok(run("--help")).stdout
    for name in COMMANDS:
        assert name in top
        h = ok(run(name, "--help")).stdout
        assert "Example:" in h, name
    for sub in ("add", "ls", "show", "rm", "modify"):
        assert "Example:" in ok(run("app", sub, "--help")).stdout
    assert "Example:" in ok(run("db", "upgrade", "--help")).stdout
    for sub in ("submit", "ls", "cancel"):
        assert "Example:" in ok(run("queue", sub, "--help")).stdout


def test_optional_modules_are_registered(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sluice.cli import main

    (tmp_path / "fake_launcher_cli.py").write_text(
        "import click\n\nCOMMANDS = ['fakeverb']\n\n@click.command(epilog='Example: sluice fakeverb')\n"
        "def fakeverb():\n    'Run jobs.'\n    click.echo('launched')\n\n"
        "@click.command()\ndef helper():\n    'Not listed.'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_cli.py").write_text("raise RuntimeError('half written')\n")
    monkeypatch.setattr(main, "OPTIONAL_MODULES", ("fake_launcher_cli", "sluice.cli.no_such_module", "broken_cli"))
    monkeypatch.setattr(main.cli, "_optional", None)
    r = ok(run("--help"))
    assert "fakeverb" in r.stdout and "cannot load broken_cli" in r.stderr
    assert ok(run("fakeverb")).stdout.strip() == "launched"
    assert "helper" not in r.stdout


def test_workspace_option_and_version(run: Run, ws: Workspace, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    add_sim(ws)
    ws.add_job("a", app="sim", params={"temp": 1})
    r = ok(run("--workspace", str(ws.path), "ls", "--json", env={"SLUICE_WORKSPACE": None}))
    assert [j["name"] for j in json.loads(r.stdout)] == ["a"]
    assert "sluice" in ok(run("--version")).stdout
    r = ok(run("ls", "--state", "FAILED"))
    assert r.stdout == "" and "no jobs match" in r.stderr
