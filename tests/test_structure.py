"""The architecture, enforced: layers import only downward, the store only through the API, small modules.

docs/architecture.md explains the layers; this test keeps the next change from quietly breaking them.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sluice"

FOUNDATION = {"errors", "environ", "schema", "states", "timefmt", "templates", "config", "version"}
LAYERS = ["foundation", "plugins", "store", "api", "engines", "cli", "entry"]
"""Bottom to top. A module may import its own layer and those below it, with one exception: the store."""
STORE_USERS = {"store", "api"}
"""Only the API (and the store itself) may import sluice.store: every other layer goes through the API."""


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]  # without the leading "sluice"
    top = parts[0] if parts else "__init__"
    if top in ("__init__", "__main__"):  # `import sluice` (the API re-exported lazily), `python -m sluice`
        return "entry"
    if top in FOUNDATION:
        return "foundation"
    if top in ("schedulers", "transfers"):
        return "plugins"
    if top == "store":
        return "store"
    if top == "api":
        return "api"
    if top in ("launcher", "service", "report", "staging", "watch", "web", "dbserver"):
        return "engines"
    if top == "cli":
        return "cli"
    raise AssertionError(f"module {module} has no layer: add it to tests/test_structure.py and docs/architecture.md")


def modules() -> list[tuple[str, Path]]:
    out = []
    for p in sorted(SRC.rglob("*.py")):
        rel = p.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        if "migrations" in parts:  # Alembic's scripts: part of the store
            continue
        out.append((".".join(parts), p))
    return out


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every sluice module this file imports, at run time or for type checking alike."""
    tree = ast.parse(path.read_text())
    found = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "sluice"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.split(".")[0] != "sluice":
                continue
            for a in node.names:  # `from sluice import api` imports sluice.api
                candidate = f"{base}.{a.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else base))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("sluice"):
                found.append((node.lineno, arg.value))
    return found


def _is_module(name: str) -> bool:
    p = SRC.parent.joinpath(*name.split("."))
    return p.with_suffix(".py").exists() or (p / "__init__.py").exists()


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_layers_import_only_downward_and_the_store_only_from_the_api(module: str, path: Path) -> None:
    mine = layer_of(module)
    bad = []
    for line, target in imports(path, module):
        theirs = layer_of(target)
        if theirs == "store" and mine not in STORE_USERS:
            bad.append(f"{path.name}:{line} imports {target}: the store is reached only through sluice.api")
        elif LAYERS.index(theirs) > LAYERS.index(mine):
            bad.append(f"{path.name}:{line} imports {target}: layer {mine} may not import upward ({theirs})")
    assert not bad, "\n".join(bad)


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: a launcher module that imports the store is caught."""
    f = tmp_path / "bad.py"
    f.write_text("from sluice.store import db\nfrom sluice import cli\n")
    got = [layer_of(t) for _, t in imports(f, "sluice.launcher.bad")]
    assert got == ["store", "cli"]


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_every_module_reads_in_one_sitting(module: str, path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n < 400, f"{module} has {n} lines: split it along its responsibilities"


def test_sluice_environment_names_are_spelled_once() -> None:
    """`SLUICE_*` variables are named in sluice/environ.py only; everyone else uses its constants. Strings in
    code are checked (docstrings may show the names to the reader)."""
    name = re.compile(r"^SLUICE_[A-Z_]+=?|\bSLUICE_[A-Z_]+=")
    bad = []
    for p in SRC.rglob("*.py"):
        if p.name == "environ.py":
            continue
        tree = ast.parse(p.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        bad += [f"{p.relative_to(SRC)}:{n.lineno}" for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs
                and name.search(n.value)]
    assert not bad, bad
