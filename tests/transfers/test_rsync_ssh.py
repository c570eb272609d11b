"""rsync for real: stage-in and stage-out over ssh and an rsync daemon to a second host (``remote_host``, a
network namespace), failures classified as rsync and ssh report them, and the Transfer interface on a batch.

Files are written on the remote side into a scratch dir that this host cannot see (its own tmpfs), so a file
arriving here, or found there, crossed the wire.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice import environ, transfers
from sluice.transfers import Item, TransferError, TransferState
from sluice.transfers.rsync import RsyncTransfer, classify, redact

from .conftest import RemoteHost


@pytest.fixture
def remote(remote_host: RemoteHost, monkeypatch: pytest.MonkeyPatch) -> RemoteHost:
    """The remote host, with RSYNC_RSH set as a user would set it."""
    for k, v in remote_host.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(environ.RSYNC_TIMEOUT, raising=False)
    return remote_host


@pytest.fixture
def silent_port(remote_host: RemoteHost) -> Iterator[int]:
    """A port on this host's end of the /30 that takes connections (the kernel does) and never says a word."""
    with socket.socket() as s:
        s.bind((remote_host.local_address, 0))
        s.listen(8)
        yield s.getsockname()[1]


def _rsync(timeout: float = 20) -> RsyncTransfer:
    return RsyncTransfer(timeout=timeout)


def test_stage_in_one_file_over_ssh(remote: RemoteHost, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    remote.write("in/one.bin", data)
    assert not (remote.scratch / "in").exists()  # only the remote side sees its scratch dir
    assert transfers.copy(remote.url("in/one.bin"), tmp_path) == [tmp_path / "one.bin"]
    assert (tmp_path / "one.bin").read_bytes() == data
    assert _rsync().copy(remote.url("in/one.bin"), tmp_path / "sub" / "renamed.bin") == [
        tmp_path / "sub" / "renamed.bin"]
    assert (tmp_path / "sub" / "renamed.bin").read_bytes() == data
    assert transfers.copy(remote.url("in/one.bin"), tmp_path) == [tmp_path / "one.bin"]  # up to date: listed


def test_stage_in_a_remote_glob_and_a_directory(remote: RemoteHost, tmp_path: Path) -> None:
    files = {"glob/a.dat": os.urandom(1000), "glob/b.dat": b"b\x00\xffb", "glob/c.txt": b"not me",
             "glob/tree/x": b"x", "glob/tree/sub/y": os.urandom(5000)}
    for rel, data in files.items():
        remote.write(rel, data)
    dest = tmp_path / "dest"
    dest.mkdir()
    assert _rsync().copy(remote.url("glob/*.dat"), dest) == [dest / "a.dat", dest / "b.dat"]
    assert sorted(p.name for p in dest.iterdir()) == ["a.dat", "b.dat"]
    assert (dest / "a.dat").read_bytes() == files["glob/a.dat"]
    assert (dest / "b.dat").read_bytes() == files["glob/b.dat"]
    assert _rsync().copy(remote.url("glob/tree"), dest) == [dest / "tree"]
    assert (dest / "tree" / "x").read_bytes() == b"x"
    assert (dest / "tree" / "sub" / "y").read_bytes() == files["glob/tree/sub/y"]
    assert _rsync().copy(remote.url("glob/*.dat"), dest) == [dest / "a.dat", dest / "b.dat"]  # again: same


def test_stage_out_a_file_and_a_glob_over_ssh(remote: RemoteHost, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    (tmp_path / "result.bin").write_bytes(data)
    assert transfers.put(tmp_path / "result.bin", remote.url("out/")) == [tmp_path / "result.bin"]
    assert remote.read("out/result.bin") == data
    assert not (remote.scratch / "out").exists()
    for n in ("a.log", "b.log"):
        (tmp_path / n).write_bytes(n.encode() * 100)
    assert _rsync().put(tmp_path / "*.log", remote.url("logs/")) == [tmp_path / "a.log", tmp_path / "b.log"]
    assert remote.read("logs/a.log") == b"a.log" * 100 and remote.read("logs/b.log") == b"b.log" * 100


def test_ssh_urls_and_the_rsync_daemon(remote: RemoteHost, tmp_path: Path) -> None:
    remote.write("urls/in.bin", b"over ssh://")
    got = transfers.copy(f"ssh://root@{remote.address}:22{remote.scratch}/urls/in.bin", tmp_path)
    assert got == [tmp_path / "in.bin"] and got[0].read_bytes() == b"over ssh://"
    (tmp_path / "up.bin").write_bytes(b"\x01\x02 to the daemon")
    assert transfers.put(tmp_path / "up.bin", remote.daemon_url("daemon/")) == [tmp_path / "up.bin"]
    assert remote.read("daemon/up.bin") == b"\x01\x02 to the daemon"
    back = tmp_path / "back"
    back.mkdir()
    assert transfers.copy(remote.daemon_url("daemon/*.bin"), back) == [back / "up.bin"]
    assert (back / "up.bin").read_bytes() == b"\x01\x02 to the daemon"


def test_a_missing_remote_file_is_not_transient(remote: RemoteHost, tmp_path: Path) -> None:
    for url in (remote.url("nope/missing.dat"), remote.url("nope/*.dat"), remote.daemon_url("nope/missing.dat")):
        with pytest.raises(TransferError) as exc:
            _rsync().copy(url, tmp_path)
        msg = str(exc.value)
        assert not exc.value.transient, msg
        assert msg.startswith("rsync failed (23): ") and "No such file or directory" in msg and "\n" not in msg
        assert "id_ed25519" not in msg and "ssh_config" not in msg
    with pytest.raises(TransferError, match=r"^rsync failed \(\d+\): .*No such file or directory") as exc:
        _rsync().put(tmp_path / "never-made.dat", remote.url("out/"))
    assert not exc.value.transient


def test_refused_connections_are_transient_and_quick(remote: RemoteHost, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSYNC_RSH", remote.env["RSYNC_RSH"] + " -p 2")  # nothing listens on port 2 there
    for url in (remote.url("x"), f"rsync://{remote.address}:2/scratch/x"):
        t0 = time.monotonic()
        with pytest.raises(TransferError, match="Connection refused") as exc:
            _rsync(timeout=10).copy(url, tmp_path)
        assert exc.value.transient and time.monotonic() - t0 < 5


def test_a_silent_host_is_transient_within_the_timeout(remote: RemoteHost, silent_port: int, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSYNC_RSH", remote.env["RSYNC_RSH"] + f" -p {silent_port}")
    monkeypatch.setenv(environ.RSYNC_TIMEOUT, "2")
    t = transfers.get("rsync")  # the registry's instance reads SLUICE_RSYNC_TIMEOUT
    for url in (f"root@{remote.local_address}:/x", f"rsync://{remote.local_address}:{silent_port}/scratch/x"):
        t0 = time.monotonic()
        st = t.poll(t.submit([Item(url, str(tmp_path))]))
        took = time.monotonic() - t0
        assert (st.state, st.transient) == (TransferState.FAILED, True), st
        assert "timed out" in st.message or "timeout" in st.message, st.message
        assert took < 8, f"{url}: {took:.1f} s with a 2 s timeout"


def test_submit_and_poll_a_batch_of_two(remote: RemoteHost, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    remote.write("batch/in.bin", data)
    (tmp_path / "out.bin").write_bytes(data[::-1])
    t = transfers.get("rsync")
    handle = t.submit([Item(remote.url("batch/in.bin"), str(tmp_path / "in.bin")),
                       Item(str(tmp_path / "out.bin"), remote.url("batch/sent/"), put=True)])
    st = t.poll(handle)
    assert (st.state, st.message, st.paths) == (TransferState.DONE, "", (tmp_path / "in.bin", tmp_path / "out.bin"))
    assert (tmp_path / "in.bin").read_bytes() == data
    assert remote.read("batch/sent/out.bin") == data[::-1]
    t.cancel(handle)
    assert transfers.get("ssh").poll(handle) == st

    failed = t.poll(t.submit([Item(remote.url("batch/missing.bin"), str(tmp_path / "m.bin")),
                              Item(remote.url("batch/in.bin"), str(tmp_path / "never.bin"))]))
    assert (failed.state, failed.transient, failed.paths) == (TransferState.FAILED, False, ())
    assert "No such file or directory" in failed.message and not (tmp_path / "never.bin").exists()


def test_a_checksum_is_verified_after_the_copy(remote: RemoteHost, tmp_path: Path) -> None:
    data = os.urandom(50_000)
    remote.write("sum/in.bin", data)
    good = "sha256:" + hashlib.sha256(data).hexdigest()
    t = transfers.get("rsync")
    st = t.poll(t.submit([Item(remote.url("sum/in.bin"), str(tmp_path / "in.bin"), checksum=good)]))
    assert (st.state, st.paths) == (TransferState.DONE, (tmp_path / "in.bin",))
    assert (tmp_path / "in.bin").read_bytes() == data
    bad = "sha256:" + hashlib.sha256(b"other").hexdigest()
    with pytest.raises(TransferError, match="^checksum mismatch for bad.bin: expected sha256:") as exc:
        _rsync().copy(remote.url("sum/in.bin"), tmp_path / "bad.bin", checksum=bad)
    assert not exc.value.transient and not (tmp_path / "bad.bin").exists()
    refused = [(remote.url("sum/*.bin"), good, "is a glob"), (remote.url("sum/in.bin"), "sha256:x", "bad checksum")]
    for src, checksum, match in refused:  # before anything moves
        with pytest.raises(TransferError, match=match):
            _rsync().copy(src, tmp_path / "never.bin", checksum=checksum)
        assert not (tmp_path / "never.bin").exists()


@pytest.mark.parametrize(
    ("code", "stderr", "reason", "transient"),
    [
        (255, "root@h: Permission denied (publickey).\r\nrsync: connection unexpectedly closed (0 bytes)\n",
         "root@h: Permission denied (publickey).", False),
        (255, "ssh: Could not resolve hostname nohost: Name or service not known\n",
         "ssh: Could not resolve hostname nohost: Name or service not known", False),
        (255, "ssh: Could not resolve hostname h: Temporary failure in name resolution\n",
         "ssh: Could not resolve hostname h: Temporary failure in name resolution", True),
        (255, "Warning: Permanently added 'h' (ED25519) to the list of known hosts.\n"
              "ssh: connect to host h port 22: No route to host\n", "ssh: connect to host h port 22: No route to host",
         True),
        (24, "file has vanished: \"/d/x\"\n", 'file has vanished: "/d/x"', True),
        (23, 'rsync: [Receiver] mkdir "/ro/x" failed: Read-only file system (30)\n'
             "rsync error: some files/attrs were not transferred (code 23)\n",
         'rsync: [Receiver] mkdir "/ro/x" failed: Read-only file system (30)', False),
        (5, "@ERROR: Unknown module 'nope'\nrsync error: error starting client-server protocol (code 5)\n",
         "@ERROR: Unknown module 'nope'", False),
        (12, "", "(no output)", True),
    ],
)
def test_classify(code: int, stderr: str, reason: str, transient: bool) -> None:
    assert classify(code, stderr) == (reason, transient)


def test_no_password_in_a_message(tmp_path: Path) -> None:
    assert redact("rsync://me:s3cret@host/m/x") == "rsync://me:***@host/m/x"
    assert redact("ssh://me@host/x and host:/a:b") == "ssh://me@host/x and host:/a:b"
    with pytest.raises(TransferError) as exc:
        _rsync().copy("ssh://me:s3cret@host:99999/x", tmp_path)
    assert "s3cret" not in str(exc.value) and "bad port" in str(exc.value)


def test_a_bad_timeout_setting_is_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(environ.RSYNC_TIMEOUT, "soon")
    with pytest.raises(TransferError, match=f"^{environ.RSYNC_TIMEOUT} must be a positive number of seconds"):
        RsyncTransfer().copy("host:/x", tmp_path)
