"""Fixtures for scheduler tests: recorded scheduler outputs, and fake scheduler commands on PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def recorded(name: str) -> str:
    """A recorded scheduler output from tests/schedulers/data, without its leading '#' comment lines."""
    lines = (DATA / name).read_text().splitlines(keepends=True)
    return "".join(ln for ln in lines if not ln.startswith("#"))


class FakeCommands:
    """Scheduler commands (copies of data/fake-command.sh) that record how they were called and answer as told."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir

    def install(self, *names: str) -> None:
        """Put commands with these names on PATH; each answers nothing and exits 0 until told otherwise."""
        for name in names:
            (self.bindir / name).write_text((DATA / "fake-command.sh").read_text())
            (self.bindir / name).chmod(0o755)

    def answer(self, name: str, stdout: str = "", stderr: str = "", rc: int = 0, reads_stdin: bool = False) -> None:
        """What command ``name`` prints and exits with from now on (and whether it records its stdin)."""
        (self.bindir / f"{name}.stdout").write_text(stdout)
        (self.bindir / f"{name}.stderr").write_text(stderr)
        (self.bindir / f"{name}.rc").write_text(str(rc))
        if reads_stdin:
            (self.bindir / f"{name}.reads-stdin").touch()

    def argv(self, name: str) -> list[str]:
        """The arguments of the last call of ``name`` (without the command itself)."""
        return (self.bindir / f"{name}.argv").read_text().splitlines()

    def stdin(self, name: str) -> str:
        """What the last call of ``name`` read on stdin (when told to with ``reads_stdin``)."""
        return (self.bindir / f"{name}.stdin").read_text()


@pytest.fixture
def fake_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCommands:
    """An empty bin directory first on PATH (then /usr/bin and /bin for sh, cat and printf)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    return FakeCommands(bindir)
