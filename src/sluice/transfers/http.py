"""http:// and https:// stage-in with the standard library: resumable downloads, checked when asked.

A download is written to ``<name>.part`` beside its final name and renamed there (atomically, after an fsync)
only once complete and, with a checksum, verified: the final name never holds half a file. A ``.part`` left by
a cut connection is resumed by the next :meth:`HttpTransfer.copy` with ``Range: bytes=N-``: a 206 answer is
appended; a 200 means the server ignored the range, so the file starts over; a 416 (the part is complete, or
the file changed and is shorter now) starts over once.

Errors: refused or reset connections, timeouts, a cut stream, 5xx, 408 and 429 are transient (a retry resumes);
other 4xx, a failed certificate check and a bad URL are not. Messages name the URL without its credentials and
query string (which may hold a signature), and the status.

Certificates are verified against the system's CA bundle; OpenSSL's standard ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
choose another (a site's private CA). Proxies come from the usual ``*_proxy`` variables (urllib's). Credentials,
first found wins: ``user:password@`` in the URL (that host only); the ``~/.netrc`` entry for the host (basic
auth, also after a redirect to that host); the bearer token in :data:`sluice.environ.HTTP_TOKEN`, sent over
https only and only to the stage URL's own host. None of them is ever logged or put in a message.

Stage-out to http(s) is not supported: :meth:`HttpTransfer.put` says where files can go.
"""

from __future__ import annotations

import base64
import functools
import http.client
import netrc
import os
import posixpath
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any, ClassVar
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

from sluice import environ
from sluice.errors import one_line
from sluice.transfers.base import SyncTransfer, TransferError, parse_checksum, verify
from sluice.version import __version__

_CHUNK = 1 << 20
"""Bytes per read and write: large enough that a 1 GiB file costs ~1000 system calls each way."""
_TIMEOUT_S = 60.0
"""Seconds to connect, and for each read, before a transient timeout error."""
_AGENT = f"sluice/{__version__}"


def shown(url: str) -> str:
    """``url`` as messages show it: no ``user:password@``, and ``?...`` for a query string."""
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc.rpartition("@")[2], p.path, "...", "") if p.query else
                      (p.scheme, p.netloc.rpartition("@")[2], p.path, "", ""))


@functools.lru_cache(maxsize=4)
def _tls(paths: ssl.DefaultVerifyPaths) -> ssl.SSLContext:
    """A verifying TLS context for the CA bundle OpenSSL would use now (made once: each costs ~70 ms)."""
    return ssl.create_default_context()


def _origin(p: SplitResult) -> tuple[str, str, int]:
    scheme = p.scheme.lower()
    return scheme, (p.hostname or "").lower(), p.port or (443 if scheme == "https" else 80)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class _Credentials:
    """The Authorization header (or None) for each URL of one download, its redirects included."""

    def __init__(self, url: str) -> None:
        p = urlsplit(url)
        self.origin = _origin(p)
        self.userinfo = (unquote(p.username), unquote(p.password or "")) if p.username is not None else None
        self.token = os.environ.get(environ.HTTP_TOKEN) or None
        self._netrc: netrc.netrc | None | bool = False  # False: not read yet

    def _from_netrc(self, host: str) -> tuple[str, str] | None:
        if self._netrc is False:
            try:
                self._netrc = netrc.netrc()
            except (FileNotFoundError, PermissionError):
                self._netrc = None
            except netrc.NetrcParseError as e:  # its message may quote a token: give the line only
                raise TransferError(f"~/.netrc cannot be read (line {e.lineno}); fix or remove it") from None
        found = self._netrc.authenticators(host) if isinstance(self._netrc, netrc.netrc) else None
        return (found[0], found[2] or "") if found else None

    def header(self, url: str) -> str | None:
        p = urlsplit(url)
        origin = _origin(p)
        if origin == self.origin and self.userinfo:
            return _basic(*self.userinfo)
        if (login := self._from_netrc(origin[1])) is not None:
            return _basic(*login)
        if origin == self.origin and origin[0] == "https" and self.token:
            return f"Bearer {self.token}"
        return None


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirects, with the credentials each new URL may have (and no others)."""

    def __init__(self, credentials: _Credentials) -> None:
        self.credentials = credentials

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
                         headers: http.client.HTTPMessage, newurl: str) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise TransferError(f"{shown(req.full_url)} redirects to a URL that is not http(s): {shown(newurl)}")
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and (auth := self.credentials.header(new.full_url)) is not None:
            new.add_unredirected_header("Authorization", auth)  # never copied on to a further redirect
        return new


class _StartOver(Exception):
    """The server will not resume the ``.part``: remove it and download from the start."""


def _status_error(url: str, code: int, reason: str) -> TransferError:
    hint = ""
    if code in (401, 403):
        hint = f" (credentials: ~/.netrc, user:password@ in the URL, or {environ.HTTP_TOKEN} for https)"
    return TransferError(f"{url}: HTTP {code} {reason}{hint}".rstrip(),
                         transient=code >= 500 or code in (408, 429))


def _network_error(url: str, e: BaseException) -> TransferError:
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, ssl.SSLCertVerificationError):
        return TransferError(f"{url}: certificate verification failed ({reason.verify_message}); for a site's own"
                             " CA, point SSL_CERT_FILE at its bundle")
    if isinstance(reason, socket.gaierror):
        return TransferError(f"{url}: cannot resolve the host ({one_line(reason)})",
                             transient=reason.errno == socket.EAI_AGAIN)
    if isinstance(reason, (OSError, http.client.HTTPException)):  # refused, reset, timed out, cut
        return TransferError(f"{url}: {one_line(reason)}", transient=True)
    return TransferError(f"{url}: {one_line(reason)}")  # unknown URL type, bad port, ...


def _content_range(value: str | None) -> tuple[int, int | None]:
    """(first byte, total size or None) of ``Content-Range: bytes FIRST-LAST/TOTAL``; (-1, None) if unreadable."""
    unit, _, spec = (value or "").strip().partition(" ")
    span, _, total = spec.partition("/")
    first = span.partition("-")[0]
    if unit.lower() != "bytes" or not first.isdigit():
        return -1, None
    return int(first), int(total) if total.isdigit() else None


def _validator_file(part: Path) -> Path:
    return part.with_name(part.name + ".validator")


def _remember(tag: Path, headers: Any) -> None:
    """Keep what tells this version of the file from the next: a strong ETag, else Last-Modified (If-Range
    takes either); without one a cut download starts over rather than risk joining two versions."""
    etag = headers.get("ETag") or ""
    value = etag if etag.startswith('"') else headers.get("Last-Modified")
    if value:
        tag.write_text(value)
    else:
        tag.unlink(missing_ok=True)


def _fetch(opener: urllib.request.OpenerDirector, url: str, auth: str | None, part: Path, name: str) -> None:
    """Bring ``url`` into ``part``, resuming what is there; return once the part is complete and on disk."""
    offset = part.stat().st_size if part.exists() else 0
    tag = _validator_file(part)
    validator = tag.read_text() if offset and tag.exists() else None
    if validator is None:
        offset = 0  # a part we cannot prove is of the same version of the file: never mix two versions
    req = urllib.request.Request(url, headers={"User-Agent": _AGENT, "Accept-Encoding": "identity"})
    if offset and validator:
        req.add_header("Range", f"bytes={offset}-")
        req.add_header("If-Range", validator)  # changed since: the server sends it all again (a 200)
    if auth is not None:
        req.add_unredirected_header("Authorization", auth)
    try:
        resp = opener.open(req, timeout=_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        e.close()
        if e.code == 416 and offset:
            raise _StartOver() from None
        raise _status_error(name, e.code, e.reason) from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError is an OSError
        raise _network_error(name, e) from None
    with resp:
        total: int | None
        if resp.status == 206:
            first, total = _content_range(resp.headers.get("Content-Range"))
            if first != offset:
                raise _StartOver()
            mode = "ab"
        else:  # 200: the whole file (a server that ignores Range, or whose file changed, sends it all again)
            offset, mode, total = 0, "wb", None
            _remember(tag, resp.headers)
        if total is None and (length := resp.headers.get("Content-Length", "")).isdigit():
            total = offset + int(length)
        got = offset
        buf = memoryview(bytearray(_CHUNK))
        with part.open(mode) as f:
            while True:
                try:
                    n = resp.readinto(buf)
                except (OSError, http.client.HTTPException) as e:
                    raise TransferError(f"{name}: connection lost after {got} bytes ({one_line(e)}); a retry"
                                        " resumes", transient=True) from None
                if not n:
                    break
                f.write(buf[:n])
                got += n
            f.flush()
            os.fsync(f.fileno())
    if total is not None and got < total:
        raise TransferError(f"{name}: connection closed after {got} of {total} bytes; a retry resumes",
                            transient=True)


class HttpTransfer(SyncTransfer):
    """Downloads over http:// and https:// (one instance serves both schemes)."""

    scheme: ClassVar[str] = "http"

    def copy(self, src: str, dest: Path, *, link: bool = False, checksum: str | None = None) -> list[Path]:
        """See :meth:`Transfer.copy`: a directory ``dest`` keeps the URL path's last component as the name;
        ``link`` is ignored (a remote file cannot be linked to). Returns ``[final path]``."""
        if checksum is not None:
            parse_checksum(checksum)
        name = shown(src)
        p = urlsplit(src)
        if p.scheme.lower() not in ("http", "https") or not p.hostname:
            raise TransferError(f"not an http(s) URL with a host: {name}")
        if dest.is_dir():
            base = posixpath.basename(unquote(p.path))
            if base in ("", ".", "..") or "\0" in base:
                raise TransferError(f"{name} names no file to keep the name of; give dest as a file path")
            target = dest / base
        else:
            target = dest
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        url = urlunsplit((p.scheme, p.netloc.rpartition("@")[2], p.path or "/", p.query, ""))
        credentials = _Credentials(src)
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=_tls(ssl.get_default_verify_paths())),
                                             _Redirects(credentials))
        auth = credentials.header(url)
        try:
            _fetch(opener, url, auth, part, name)
        except _StartOver:
            part.unlink(missing_ok=True)
            _validator_file(part).unlink(missing_ok=True)
            try:
                _fetch(opener, url, auth, part, name)
            except _StartOver:
                raise TransferError(f"{name}: the server refused the download twice (HTTP 416)") from None
        try:
            verify(part, checksum)
        except TransferError as e:
            _validator_file(part).unlink(missing_ok=True)
            raise TransferError(f"{name}: {e}") from None
        os.replace(part, target)
        _validator_file(part).unlink(missing_ok=True)
        return [target]

    def put(self, src: Path, dest: str) -> list[Path]:
        """Not supported: http(s) URLs are read-only here."""
        raise TransferError(f"stage-out to http(s) is not supported ({shown(dest)}); stage out to a local path,"
                            " file://, host:path (rsync over ssh) or rsync://")
