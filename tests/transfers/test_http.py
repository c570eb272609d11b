"""http(s) stage-in against a real server on 127.0.0.1 (http.server in a thread, with byte ranges): plain
downloads, a cut download resumed with Range, servers that ignore or refuse the range, checksums, statuses and
their transience, timeouts, credentials (netrc, URL, bearer token over https only), certificates."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sluice import environ, transfers
from sluice.transfers import Item, TransferError, TransferState
from sluice.transfers import http as http_transfer
from sluice.transfers.http import HttpTransfer

DATA = bytes(range(256)) * (3 * 4096) + b"tail"  # 3 MiB + 4: several 1 MiB chunks and a short last one


@dataclass
class State:
    """What the server serves and how it misbehaves; what it was asked."""

    files: dict[str, bytes] = field(default_factory=lambda: {"/data/input.dat": DATA})
    status: dict[str, int] = field(default_factory=lambda: {"/busy": 503, "/slow-down": 429, "/gone": 404})
    cut: dict[str, int] = field(default_factory=dict)  # path -> bytes sent before closing, on its next request
    ignore_range: set[str] = field(default_factory=set)
    stall_s: float = 0.0
    auth: str | None = None  # the Authorization that /private/... needs
    redirect: str | None = None  # where /redirect goes
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    state: State  # set per server by a subclass

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        st = self.state
        path = urlsplit(self.path).path
        st.requests.append((path, dict(self.headers)))
        if path in st.status:
            self.send_error(st.status[path])
            return
        if path == "/redirect" and st.redirect:
            self.send_response(302)
            self.send_header("Location", st.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path.startswith("/private/") and self.headers.get("Authorization") != st.auth:
            self.send_error(401)
            return
        data = st.files.get(path.removeprefix("/private"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        etag = '"' + hashlib.sha1(data).hexdigest()[:16] + '"'
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if m and path not in st.ignore_range and (if_range is None or if_range == etag):
            start = int(m[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        time.sleep(st.stall_s)
        cut = st.cut.pop(path, None)
        self.wfile.write(body if cut is None else body[:cut])  # a cut: the connection closes after this


def _serve(state: State, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    handler = type("BoundHandler", (Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def state() -> State:
    return State()


@pytest.fixture
def server(state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The base URL of a fresh server; no proxy, no ~/.netrc and no token from the environment of the run."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv(environ.HTTP_TOKEN, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield from _serve(state)


def _dir(tmp_path: Path, name: str = "job") -> Path:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    return d


def test_download_into_a_directory_and_to_a_file_path(server: str, tmp_path: Path) -> None:
    job = _dir(tmp_path)
    assert transfers.copy(f"{server}/data/input.dat?version=2", job) == [job / "input.dat"]  # via the registry
    assert (job / "input.dat").read_bytes() == DATA
    target = tmp_path / "new" / "sub" / "renamed.bin"
    assert HttpTransfer().copy(f"{server}/data/input.dat", target) == [target]
    assert target.read_bytes() == DATA
    assert sorted(p.name for p in job.iterdir()) == ["input.dat"]  # no .part left
    assert transfers.get("https") is transfers.get("http")
    with pytest.raises(TransferError, match="names no file to keep the name of"):
        HttpTransfer().copy(f"{server}/", job)


def test_a_cut_download_is_resumed_by_the_next_copy(server: str, state: State, tmp_path: Path) -> None:
    cut = (1 << 20) + 5
    state.cut["/data/input.dat"] = cut
    job = _dir(tmp_path)
    with pytest.raises(TransferError, match=rf"connection closed after {cut} of {len(DATA)} bytes") as e:
        HttpTransfer().copy(f"{server}/data/input.dat", job)
    assert e.value.transient
    assert not (job / "input.dat").exists() and (job / "input.dat.part").stat().st_size == cut
    HttpTransfer().copy(f"{server}/data/input.dat", job)
    assert [r[1].get("Range") for r in state.requests] == [None, f"bytes={cut}-"]
    assert (job / "input.dat").read_bytes() == DATA and not (job / "input.dat.part").exists()


def test_a_part_without_a_validator_is_never_resumed(server: str, state: State, tmp_path: Path) -> None:
    """Bytes of unknown origin (no ETag or Last-Modified kept with them) are not joined to the file: start over."""
    job = _dir(tmp_path)
    (job / "input.dat.part").write_bytes(b"bytes of some other version")
    HttpTransfer().copy(f"{server}/data/input.dat", job)
    assert (job / "input.dat").read_bytes() == DATA
    assert [r[1].get("Range") for r in state.requests] == [None]


def test_a_range_ignored_or_refused_starts_over(server: str, state: State, tmp_path: Path) -> None:
    job = _dir(tmp_path)
    state.ignore_range.add("/data/input.dat")
    (job / "input.dat.part").write_bytes(b"stale bytes of another version")
    HttpTransfer().copy(f"{server}/data/input.dat", job)  # 200 to a Range request: the whole file again
    assert (job / "input.dat").read_bytes() == DATA
    state.ignore_range.clear()
    state.requests.clear()
    (job / "input.dat.part").write_bytes(DATA + b"longer than the file")
    (job / "input.dat.part.validator").write_text('"' + hashlib.sha1(DATA).hexdigest()[:16] + '"')
    HttpTransfer().copy(f"{server}/data/input.dat", job)  # 416: start over, once
    assert [r[1].get("Range") for r in state.requests] == [f"bytes={len(DATA) + 20}-", None]
    assert (job / "input.dat").read_bytes() == DATA and not (job / "input.dat.part").exists()


def test_checksums_match_or_fail_cleanly(server: str, state: State, tmp_path: Path) -> None:
    job = _dir(tmp_path)
    url = f"{server}/data/input.dat"
    good = hashlib.sha256(DATA).hexdigest()
    HttpTransfer().copy(url, job, checksum=f"sha256:{good.upper()}")
    assert (job / "input.dat").read_bytes() == DATA
    (job / "input.dat").unlink()
    wrong = hashlib.md5(b"something else").hexdigest()
    with pytest.raises(TransferError) as e:
        HttpTransfer().copy(url, job, checksum=f"md5:{wrong}")
    assert not e.value.transient
    assert f"expected md5:{wrong}, got md5:{hashlib.md5(DATA).hexdigest()}" in str(e.value) and url in str(e.value)
    assert list(job.iterdir()) == []  # neither the final name nor a .part
    n = len(state.requests)
    with pytest.raises(TransferError, match="bad checksum 'sha256:abc'"):
        HttpTransfer().copy(url, job, checksum="sha256:abc")
    assert len(state.requests) == n  # refused before asking the server
    t = transfers.get("http")
    st = t.poll(t.submit([Item(url, str(job), checksum=f"sha512:{hashlib.sha512(DATA).hexdigest()}"),
                          Item(url, str(job / "again.dat"), checksum=f"sha1:{'0' * 40}")]))
    assert (st.state, st.transient, st.paths) == (TransferState.FAILED, False, (job / "input.dat",))
    assert "checksum mismatch" in st.message and not (job / "again.dat").exists()


def test_local_copies_verify_the_checksum_too(tmp_path: Path) -> None:
    src = tmp_path / "src.dat"
    src.write_bytes(b"abc")
    t = transfers.get("local")
    t.copy(str(src), tmp_path / "ok.dat", checksum=f"sha256:{hashlib.sha256(b'abc').hexdigest()}")
    with pytest.raises(TransferError, match="checksum mismatch for bad.dat: expected sha256:0+, got sha256:ba78"):
        t.copy(str(src), tmp_path / "bad.dat", link=True, checksum=f"sha256:{'0' * 64}")
    assert not (tmp_path / "bad.dat").is_symlink() and src.read_bytes() == b"abc"  # the link went, not its target
    with pytest.raises(TransferError, match="a checksum applies to one file"):
        t.copy(str(tmp_path / "*.dat"), _dir(tmp_path), checksum=f"sha256:{'0' * 64}")


def test_statuses_name_the_url_and_say_whether_a_retry_can_help(server: str, tmp_path: Path) -> None:
    job = _dir(tmp_path)
    with pytest.raises(TransferError, match=rf"^{re.escape(server)}/gone: HTTP 404 Not Found$") as e:
        HttpTransfer().copy(f"{server}/gone", job)
    assert not e.value.transient
    for path, code in (("/busy", 503), ("/slow-down", 429)):
        with pytest.raises(TransferError, match=rf"{path}: HTTP {code} ") as e:
            HttpTransfer().copy(f"{server}{path}", job)
        assert e.value.transient
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransferError, match="Connection refused") as e:
        HttpTransfer().copy(f"http://127.0.0.1:{port}/x", job)
    assert e.value.transient
    with pytest.raises(TransferError, match=r"stage-out to http\(s\) is not supported .* rsync://"):
        transfers.put(job / "x", f"{server}/upload/x")
    assert list(job.iterdir()) == []


def test_a_stalled_server_times_out_transiently(server: str, state: State, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_transfer, "_TIMEOUT_S", 0.2)
    state.stall_s = 1.0
    with pytest.raises(TransferError, match="timed out") as e:
        HttpTransfer().copy(f"{server}/data/input.dat", _dir(tmp_path))
    assert e.value.transient


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_from_netrc_and_the_url_never_shown_nor_sent_elsewhere(
        server: str, state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _dir(tmp_path)
    host = server.removeprefix("http://")
    state.auth = _basic("bob", "pa:ss")
    HttpTransfer().copy(f"http://bob:pa%3Ass@{host}/private/data/input.dat", job / "a.dat")
    with pytest.raises(TransferError) as e:
        HttpTransfer().copy(f"http://bob:wrong@{host}/private/data/input.dat?sig=SECRET", job)
    assert str(e.value).startswith(f"{server}/private/data/input.dat?...: HTTP 401 Unauthorized (credentials:")
    assert "wrong" not in str(e.value) and "SECRET" not in str(e.value) and not e.value.transient
    netrc = Path(os.environ["HOME"]) / ".netrc"
    netrc.write_text("machine 127.0.0.1 login alice password s3cret\n")
    netrc.chmod(0o600)
    state.auth = _basic("alice", "s3cret")
    monkeypatch.setenv(environ.HTTP_TOKEN, "tok-123")
    HttpTransfer().copy(f"{server}/private/data/input.dat", job / "b.dat")
    assert (job / "b.dat").read_bytes() == DATA
    netrc.unlink()
    state.requests.clear()
    with pytest.raises(TransferError, match="HTTP 401"):  # the token goes over https only
        HttpTransfer().copy(f"{server}/private/data/input.dat", job)
    assert "Authorization" not in state.requests[0][1]
    other = State()
    for base in _serve(other):  # a redirect to another server gets none of the URL's credentials
        state.redirect = f"{base}/data/input.dat"
        HttpTransfer().copy(f"http://bob:pa%3Ass@{host}/redirect", job / "c.dat")
        assert state.requests[-1][1].get("Authorization") == _basic("bob", "pa:ss")
        assert [r[0] for r in other.requests] == ["/data/input.dat"]
        assert "Authorization" not in other.requests[0][1]
    assert (job / "c.dat").read_bytes() == DATA


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI (the https tests skip without it)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl CLI to make a self-signed certificate for the https tests")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {p.stderr.strip()[-300:]}")
    return cert, key


def test_https_verifies_certificates_and_sends_the_token(certificate: tuple[Path, Path], server: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    st = State(auth="Bearer tok-123")
    job = _dir(tmp_path)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv(environ.HTTP_TOKEN, "tok-123")
    for base in _serve(st, tls):
        with pytest.raises(TransferError, match="certificate verification failed .* SSL_CERT_FILE") as e:
            HttpTransfer().copy(f"{base}/private/data/input.dat", job)
        assert not e.value.transient and "tok-123" not in str(e.value)
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the standard way to trust a site's own CA
        HttpTransfer().copy(f"{base}/private/data/input.dat", job)
        assert st.requests[-1][1].get("Authorization") == "Bearer tok-123"
    assert (job / "input.dat").read_bytes() == DATA


def test_a_file_that_changed_since_the_cut_is_fetched_whole_not_mixed(server: str, state: State,
                                                                       tmp_path: Path) -> None:
    """A resume sends If-Range: a server whose file changed sends it all again, and nothing of the old part stays."""
    url, st = server, state
    st.cut["/data/input.dat"] = 1_000_000
    with pytest.raises(TransferError):
        transfers.copy(url + "/data/input.dat", tmp_path)
    new = DATA[::-1]
    st.files["/data/input.dat"] = new
    (got,) = transfers.copy(url + "/data/input.dat", tmp_path)
    assert got.read_bytes() == new
    asked = [h for p, h in st.requests if p == "/data/input.dat"]
    assert "If-Range" in asked[-1] and asked[-1]["Range"] == "bytes=1000000-"
    assert not list(tmp_path.glob("*.part*"))
