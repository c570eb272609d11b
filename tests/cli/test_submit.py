"""`sluice submit FILE`: workflow files in YAML or JSON, validated in full before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluice.api import Workspace

from .conftest import Run, add_sim, ok, snapshot, user_error

GOOD = """\
workflow: scan
apps:
  sim:
    command: simulate --temp {temp}
    description: MD run
    environment: {OMP_NUM_THREADS: "4"}
  ana: analyse --in {input}
jobs:
  - {name: summary, app: ana, params: {input: all}, parents: [t300, t310]}
  - {name: t300, app: sim, params: {temp: 300}, num_nodes: 2, wall_time_min: "00:30:00"}
  - {name: t310, app: sim, params: {temp: 310}, tags: {kind: md}}
  - {name: plot, app: ana, params: {input: summary}, parents: [summary], workflow: post}
"""


def test_submit_yaml(run: Run, ws: Workspace, tmp_path: Path) -> None:
    f = tmp_path / "camp.yaml"
    f.write_text(GOOD)
    before = snapshot(ws)
    r = ok(run("submit", str(f), "--dry-run"))
    assert "would add 2 new app(s), 4 job(s), 3 dependency(ies) in 3 layer(s)" in r.stdout
    assert snapshot(ws) == before
    ids = json.loads(ok(run("submit", str(f), "--json")).stdout)
    assert set(ids) == {"summary", "t300", "t310", "plot"}
    s, t300, plot = ws.job(ids["summary"]), ws.job(ids["t300"]), ws.job(ids["plot"])
    assert sorted(p.id for p in s.parents) == sorted([ids["t300"], ids["t310"]])
    assert s.state == "AWAITING_PARENTS" and t300.state == "PREPROCESSED" and t300.workflow == "scan"
    assert (t300.num_nodes, t300.wall_time_min) == (2, 30) and plot.workflow == "post"
    assert ws.app("sim").environment == {"OMP_NUM_THREADS": "4"}
    # the same file again adds nothing (the apps match, the jobs are there); --new adds a fresh copy
    r = ok(run("submit", str(f)))
    assert "0 job(s)" in r.stdout and "4 already there" in r.stdout and ws.count() == 4
    ok(run("submit", str(f), "--new"))
    assert ws.count() == 8


def test_submit_json_with_existing_parent(run: Run, sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = sqlite_ws
    add_sim(ws)
    old = ws.add_job("old", app="sim", params={"temp": 1})
    f = tmp_path / "w.json"
    f.write_text(json.dumps({"jobs": [{"name": "n", "app": "sim", "params": {"temp": 2}, "parents": [old.id]},
                                      {"name": "m", "app": "sim", "params": {"temp": 3}, "parents": ["old"]}]}))
    ok(run("submit", str(f)))
    for name in ("n", "m"):
        assert [p.id for p in ws.job(name).parents] == [old.id]


BAD = {
    "unknown_parent": ("jobs:\n  - {name: a, app: sim, params: {temp: 1}, parents: [nobody]}\n", "nobody"),
    "cycle": ("jobs:\n  - {name: a, app: sim, params: {temp: 1}, parents: [b]}\n"
              "  - {name: b, app: sim, params: {temp: 1}, parents: [a]}\n", "cycle"),
    "self_dependency": ("jobs:\n  - {name: a, app: sim, params: {temp: 1}, parents: [a]}\n", "itself"),
    "unknown_app": ("jobs:\n  - {name: a, app: nope}\n", "unknown app 'nope'"),
    "missing_param": ("apps: {new: 'run {x}'}\njobs:\n  - {name: a, app: new}\n", "needs parameter(s) x"),
    "unknown_param": ("jobs:\n  - {name: a, app: sim, params: {temp: 1, p: 2}}\n", "no parameter(s) p"),
    "zero_nodes": ("jobs:\n  - {name: a, app: sim, params: {temp: 1}, num_nodes: 0}\n", "num-nodes"),
    "bad_wall_time": ("jobs:\n  - {name: a, app: sim, params: {temp: 1}, wall_time_min: soon}\n", "wall time"),
    "unknown_field": ("jobs:\n  - {name: a, app: sim, params: {temp: 1}, colour: red}\n", "colour"),
    "app_differs": ("apps: {sim: 'other {temp}'}\njobs: []\n", "different command"),
    "bad_app_template": ("apps: {x: 'run {1}'}\n", "placeholder"),
    "duplicate_parent_name": ("jobs:\n  - {name: a, app: sim, params: {temp: 1}}\n"
                              "  - {name: a, app: sim, params: {temp: 2}}\n"
                              "  - {name: c, app: sim, params: {temp: 3}, parents: [a]}\n", "unique"),
    "not_yaml": ("jobs: [ {name: a\n", "not valid YAML"),
    "not_a_mapping": ("- just a list\n", "expected a mapping"),
    "unknown_top_key": ("job: []\n", "unknown"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_file_changes_nothing(run: Run, sqlite_ws: Workspace, tmp_path: Path, case: str) -> None:
    ws = sqlite_ws
    add_sim(ws)
    ws.add_job("keep", app="sim", params={"temp": 0})
    content, fragment = BAD[case]
    f = tmp_path / "bad.yaml"
    # a valid app and job first, so a half-applied file would show
    f.write_text(content if content.startswith(("apps", "- ", "job: ")) else
                 "apps: {fresh: 'echo {y}'}\n" + content.replace("jobs:\n", "jobs:\n  - {name: ok, app: fresh, "
                                                                  "params: {y: 1}}\n", 1))
    before = snapshot(ws)
    line = user_error(run("submit", str(f)), fragment)
    assert str(f) in line
    assert snapshot(ws) == before


def test_bad_file_on_every_backend(run: Run, ws: Workspace, tmp_path: Path) -> None:
    add_sim(ws)
    f = tmp_path / "bad.yaml"
    f.write_text("apps: {fresh: 'echo {y}'}\njobs:\n  - {name: a, app: fresh, params: {y: 1}}\n"
                 "  - {name: b, app: sim, params: {temp: 1}, parents: [a, c]}\n"
                 "  - {name: c, app: sim, params: {temp: 1}, parents: [b]}\n")
    before = snapshot(ws)
    user_error(run("submit", str(f)), "cycle")
    assert snapshot(ws) == before


def test_missing_file(run: Run, sqlite_ws: Workspace, tmp_path: Path) -> None:
    user_error(run("submit", str(tmp_path / "nope.yaml")), "cannot read")
