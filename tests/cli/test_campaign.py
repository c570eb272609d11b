"""Campaign files with sweeps and patterns: the issue's form as written, every error located, idempotent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sluice.api import Workspace

from .conftest import Run, ok, snapshot, user_error

HEP = """\
workflow: hep
apps: {gen: "gen --seed {seed}", unw: "unweight", merge: "merge"}
jobs:
  - {name: "gen-{seed}", app: gen, sweep: {seed: [1, 2, 3, 4]}}       # one job per point
  - {name: "unw-{seed}", app: unw, sweep: {seed: [1, 2, 3, 4]}, after: "gen-{seed}"}   # each after its own
  - {name: merge, app: merge, after: "unw-*"}                          # fan-in
"""


def _file(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def test_the_hep_chain_works_as_written(run: Run, sqlite_ws: Workspace, tmp_path: Path) -> None:
    ws = sqlite_ws
    f = _file(tmp_path, HEP)
    r = ok(run("submit", str(f), "--dry-run"))
    assert "would add 3 new app(s), 9 job(s), 8 dependency(ies) in 3 layer(s)" in r.stdout
    assert "hep/gen-1: gen {'seed': 1}" in r.stdout
    assert ws.count() == 0
    ids = json.loads(ok(run("submit", str(f), "--json")).stdout)
    assert ws.job(ids["gen-3"]).params == {"seed": 3} and ws.job(ids["unw-3"]).params == {}
    assert [p.name for p in ws.job(ids["unw-3"]).parents] == ["gen-3"]
    assert sorted(p.name for p in ws.job(ids["merge"]).parents) == ["unw-1", "unw-2", "unw-3", "unw-4"]
    assert ws.job(ids["gen-1"]).state == "PREPROCESSED" and ws.job(ids["merge"]).state == "AWAITING_PARENTS"
    before = snapshot(ws)
    r = ok(run("submit", str(f)))  # idempotent
    assert "9 already there" in r.stdout and snapshot(ws) == before
    ok(run("submit", str(f), "--new"))
    assert ws.count() == 18


def test_sweep_products_zips_and_ranges(sqlite_ws: Workspace, tmp_path: Path) -> None:
    from sluice.api import workflow_file

    f = _file(tmp_path, """\
apps: {sim: "sim --t {t} --p {p} --mode {mode} --lr {lr} --bs {bs}"}
jobs:
  - name: "s-{t}-{p}-{mode}-{lr}-{bs}"
    app: sim
    sweep: {t: [1, 2], p: {range: [0, 30, 10]}, mode: [a]}
    zip: {lr: [0.1, 0.01], bs: [32, 64]}
    tags: {t: "{t}"}
""")
    p = workflow_file.plan(sqlite_ws, f, workflow_file.load_file(f))
    names = sorted(s["name"] for s in p.specs)
    assert len(names) == 2 * 3 * 2 and "s-2-20-a-0.01-64" in names and "s-1-0-a-0.1-32" in names
    assert "s-1-0-a-0.1-64" not in names  # zip pairs, it does not cross
    spec = next(s for s in p.specs if s["name"] == "s-2-10-a-0.1-32")
    assert spec["params"] == {"t": 2, "p": 10, "mode": "a", "lr": 0.1, "bs": 32} and spec["tags"] == {"t": "2"}


@pytest.mark.parametrize(("text", "where", "fragment"), [
    ("jobs:\n  - {name: a, app: x, nodes: 2}\n", ":2:", "unknown app 'x'"),
    ("apps: {x: 'true'}\njobs:\n  - {name: a, app: x}\n  - {name: a, app: x}\n", ":4: jobs[1].name",
     "two jobs are named 'a' (the other from line 3)"),
    ("apps: {x: 'true'}\njobs:\n  - name: a\n    app: x\n    sweep: {s: {range: [1, 5, 0]}}\n", ":5: jobs[0].sweep",
     "step cannot be 0"),
    ("apps: {x: 'true'}\njobs:\n  - {name: a, app: x, after: 'b*'}\n", ":3: jobs[0].after",
     "matches no job of this file"),
    ("apps: {x: 'true'}\njobs:\n  - {name: 'a', app: x, num_nodes: 0}\n", ":3: jobs[0]", "at least 1"),
    ("apps: {x: {command: 'true', colour: red}}\n", ":1: apps.x.colour", "unknown key"),
    ("workflow: w\nstuff: 1\n", ":2: stuff", "unknown key"),
    ("apps: {x: 'true'}\njobs:\n  - {name: a, app: x, zip: {a: [1, 2], b: [1]}}\n", ":3: jobs[0].zip",
     "one length"),
    ("apps:\n  'my app': 'true'\n", ":2: apps.my app", "bad app name"),
])
def test_errors_name_the_file_the_line_and_the_field(run: Run, sqlite_ws: Workspace, tmp_path: Path, text: str,
                                                     where: str, fragment: str) -> None:
    f = _file(tmp_path, text)
    before = snapshot(sqlite_ws)
    line = user_error(run("submit", str(f)), fragment)
    assert f"{f}{where}" in line, line
    assert snapshot(sqlite_ws) == before


def test_apps_carry_a_preamble_and_per_machine_overrides(run: Run, sqlite_ws: Workspace, tmp_path: Path) -> None:
    f = _file(tmp_path, """\
apps:
  lmp:
    command: "lmp -in {inp}"
    preamble: "module load lammps"
    machines: {polaris: {preamble: "module use /soft; module load lammps/2024", command: "lmp_gpu -in {inp}"}}
jobs: [{name: run1, app: lmp, params: {inp: in.melt}}]
""")
    ok(run("submit", str(f)))
    app = sqlite_ws.app("lmp")
    assert app.preamble == "module load lammps"
    assert app.machines == {"polaris": {"preamble": "module use /soft; module load lammps/2024",
                                        "command": "lmp_gpu -in {inp}"}}
