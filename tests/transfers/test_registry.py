"""The registry of transfer modules by scheme, and the Transfer interface (submit/poll/cancel) on real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sluice import transfers
from sluice.errors import Fault, UserError
from sluice.transfers import Item, Transfer, TransferError, TransferState
from sluice.transfers.base import SyncTransfer


def test_unknown_scheme_names_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(TransferError) as exc:
        transfers.copy("gopher://x/y", tmp_path)
    assert str(exc.value).startswith("no transfer method for gopher:// URLs (gopher://x/y); supported schemes: ")
    for kind in transfers.TRANSFERS:
        assert kind in str(exc.value)
    assert isinstance(exc.value, Fault) and not isinstance(exc.value, UserError) and not exc.value.transient
    with pytest.raises(TransferError, match="no transfer method for s3://"):
        transfers.put(tmp_path / "a", "s3://bucket/a")


def test_modules_are_imported_only_when_their_scheme_is_used(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a")
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sluice import transfers\n"
        "loaded = lambda: sorted(m for m in sys.modules if m.startswith('sluice.transfers.'))\n"
        "print(loaded())\n"
        f"transfers.copy({str(tmp_path / 'a.txt')!r}, Path({str(tmp_path / 'b.txt')!r}))\n"
        "print(loaded())\n"
        "transfers.get('ssh')\n"
        "print(loaded())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=os.environ).stdout.splitlines()
    assert out == [
        "['sluice.transfers.base']",
        "['sluice.transfers.base', 'sluice.transfers.local']",
        "['sluice.transfers.base', 'sluice.transfers.local', 'sluice.transfers.rsync']",
    ]
    assert (tmp_path / "b.txt").read_text() == "a"


def test_every_registered_scheme_has_the_interface() -> None:
    for kind in transfers.TRANSFERS:
        t = transfers.get(kind)
        assert isinstance(t, Transfer) and t is transfers.get(kind)  # one instance per module:Class


@pytest.mark.parametrize(
    ("url", "kind"),
    [("/a/b", "local"), ("rel/a:b", "local"), ("./a:b", "local"), ("file:///a/b", "local"), ("C:\\x", "local"),
     ("host:/a/b", "rsync"), ("user@host.org:a", "rsync"), ("rsync://host/a", "rsync"), ("ssh://host/a", "ssh"),
     ("HTTPS://host/a", "https")],
)
def test_scheme_of_a_url(url: str, kind: str) -> None:
    assert transfers.scheme(url) == kind


def test_a_new_scheme_is_one_registry_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(transfers.TRANSFERS, "mirror", "sluice.transfers.local:LocalTransfer")
    with pytest.raises(TransferError, match="stage-in source not found: mirror://x"):
        transfers.copy("mirror://x", tmp_path)  # reached the module: no longer "no transfer method"


def test_local_submit_poll_cancel(tmp_path: Path) -> None:
    src, dest, out = tmp_path / "src", tmp_path / "dest", tmp_path / "out"
    for d in (src, dest, out):
        d.mkdir()
    for n in ("a.dat", "b.dat"):
        (src / n).write_text(n)
    t = transfers.get("local")
    handle = t.submit([Item(str(src / "*.dat"), str(dest)),
                       Item(f"file://{src / 'a.dat'}", str(dest / "link.dat"), link=True),
                       Item(str(dest / "b.dat"), str(out), put=True)])
    st = t.poll(handle)
    assert st.state is TransferState.DONE and st.message == ""
    assert st.paths == (dest / "a.dat", dest / "b.dat", dest / "link.dat", out / "b.dat")
    assert not (dest / "link.dat").is_symlink() and (out / "b.dat").read_text() == "b.dat"
    t.cancel(handle)  # done already: nothing to stop
    assert t.poll(handle) == st
    assert transfers.get("local").poll(handle) == st  # the outcome travels with the handle


def test_local_submit_stops_at_the_first_failure(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a")
    t = transfers.get("local")
    handle = t.submit([Item(str(tmp_path / "a"), str(tmp_path / "b")),
                       Item(str(tmp_path / "missing"), str(tmp_path / "c")),
                       Item(str(tmp_path / "a"), str(tmp_path / "d"))])
    st = t.poll(handle)
    assert (st.state, st.transient, st.paths) == (TransferState.FAILED, False, (tmp_path / "b",))
    assert st.message == f"stage-in source not found: {tmp_path / 'missing'}"
    assert not (tmp_path / "d").exists()


def test_rsync_failures_carry_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "rsync").write_text('#!/bin/sh\necho "rsync: connection unexpectedly closed" >&2\n'
                                  'echo "rsync error: error in rsync protocol data stream (code 12)" >&2\nexit 12\n')
    (bindir / "rsync").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    with pytest.raises(TransferError, match=r"^rsync failed \(12\): rsync: connection unexpectedly closed$") as exc:
        transfers.copy("host:/data/x", tmp_path)
    assert exc.value.transient
    t = transfers.get("rsync")
    st = t.poll(t.submit([Item(str(tmp_path / "x"), "host:/data/x", put=True)]))
    assert (st.state, st.transient) == (TransferState.FAILED, True)


def test_a_handle_without_an_outcome_is_refused() -> None:
    t = transfers.get("local")
    assert isinstance(t, SyncTransfer)
    with pytest.raises(TransferError, match="not a handle of a synchronous local transfer"):
        t.poll(transfers.TransferHandle("local", "task-1"))
