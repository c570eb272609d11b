"""rsync to and from another host: ``[user@]host:path`` (over ssh), ``ssh://[user@]host[:port]/path`` and
``rsync://host[:port]/module/path`` (an rsync daemon). Argv lists, never a local shell.

Credentials come from the user's own setup only: ``RSYNC_RSH`` if set (used as given), else
``ssh -o BatchMode=yes``, so ``~/.ssh/config``, keys and agents apply and nothing ever prompts (rsync runs
without a terminal and with stdin closed; a daemon's password comes from ``RSYNC_PASSWORD`` as rsync reads it).

A remote source may be a glob (``host:/data/*.dat``): the remote side expands it, as rsync does. A local
stage-out source may be a glob too (expanded here). ``--partial-dir`` keeps a cut file aside so the next try
resumes it instead of starting over (the final name never holds a partial file). The timeout
(``SLUICE_RSYNC_TIMEOUT`` seconds, default 300) bounds the connection and any stall (``--timeout``, ssh's
``ConnectTimeout``, ``--contimeout``); a long transfer that keeps moving data is never cut.

A failure is one :class:`TransferError` line from rsync's or ssh's own words, ``transient`` when a retry can
help (refused, unreachable, timed out, connection dropped, files vanished), not when it cannot (no such file,
permission denied, host key or login refused, unknown host or module).
"""

from __future__ import annotations

import glob
import math
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from sluice import environ
from sluice.errors import one_line
from sluice.transfers.base import SyncTransfer, TransferError, parse_checksum, verify

DEFAULT_TIMEOUT_S = 300.0
PARTIAL_DIR = ".rsync-partial"
"""Where a cut file waits (next to its destination) for the next try to resume it."""

# rsync's exit codes: 10 socket I/O, 12 protocol stream (the connection dropped), 30 I/O timeout,
# 35 daemon connect timeout, 255 ssh's own failure (refused, unreachable, timed out), 24 source files vanished
_TRANSIENT_CODES = (10, 12, 24, 30, 35, 255)
# ...unless the words say a retry cannot help; these win over any code
_PERMANENT = re.compile(
    r"No such file or directory|Permission denied|Operation not permitted|Not a directory|Is a directory"
    r"|Read-only file system|No space left on device|Disk quota exceeded|File name too long"
    r"|Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|Could not resolve hostname"
    r"|Name or service not known|command not found|Unknown module|auth failed|unknown option"
    r"|protocol version mismatch|Too many authentication failures",
    re.IGNORECASE,
)
_TRANSIENT_WORDS = re.compile(
    r"Connection refused|Connection timed out|timed out|No route to host|Network is unreachable"
    r"|Connection reset|Connection closed|connection unexpectedly closed|Temporary failure in name resolution"
    r"|max connections|io timeout",
    re.IGNORECASE,
)
# what ssh or rsync says on stderr that is never the reason
_NOISE = re.compile(r"^(Warning: Permanently added|\*\*|rsync error: |rsync: \[\w+\] write error: Broken pipe)")
_DAEMON = re.compile(r"^[^/\[\]]*::")
"""``host::module/path``: an rsync daemon (an IPv6 ``[::1]:path`` is ssh)."""
_HOST_PATH = re.compile(r"^(?:[^@/]*@)?(?:\[[^\]/]*\]|[^:/\[]*):(.*)$", re.DOTALL)
"""``[user@]host:path`` (or ``[v6]:path``, ``host::module/path``): group 1 is what follows the first colon."""
_URL_SECRET = re.compile(r"(://[^/@:\s]+):[^/@\s]*@")


def timeout_s() -> float:
    """The timeout from ``SLUICE_RSYNC_TIMEOUT``, else 300 s; a bad value is a clear error."""
    raw = os.environ.get(environ.RSYNC_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise TransferError(f"{environ.RSYNC_TIMEOUT} must be a positive number of seconds, not {raw!r}")
    return value


def redact(text: str) -> str:
    """``text`` without a password written into a URL (``rsync://user:secret@host`` -> ``user:***@``)."""
    return _URL_SECRET.sub(r"\1:***@", text)


def classify(code: int, stderr: str) -> tuple[str, bool]:
    """(one-line reason, transient) for rsync's exit ``code`` and its stderr."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    permanent = next((ln for ln in lines if _PERMANENT.search(ln) and "Temporary failure" not in ln), None)
    reason = permanent or next((ln for ln in lines if not _NOISE.match(ln)), lines[0] if lines else "")
    if permanent is not None:
        transient = False
    else:
        transient = code in _TRANSIENT_CODES or any(_TRANSIENT_WORDS.search(ln) for ln in lines)
    return one_line(redact(reason)) or "(no output)", transient


def _remote_path(url: str) -> str:
    """The path part of a remote source (what a glob would be in): after ``host:``, or a URL's path."""
    if "://" in url:
        return urlsplit(url).path
    m = _HOST_PATH.match(url)
    return m.group(1) if m else url


def _ssh_url(url: str) -> tuple[str, int | None]:
    """``ssh://[user@]host[:port]/path`` as rsync's ``[user@]host:/path``, and the port."""
    u = urlsplit(url)
    if not u.hostname:
        raise TransferError(f"no host in {redact(url)}: write ssh://[user@]host[:port]/path")
    try:
        port = u.port
    except ValueError:
        raise TransferError(f"bad port in {redact(url)}") from None
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    user = f"{u.username}@" if u.username else ""
    return f"{user}{host}:{u.path or '/'}", port


class RsyncTransfer(SyncTransfer):
    """``rsync -a`` to or from another host; ``timeout`` (seconds) overrides ``SLUICE_RSYNC_TIMEOUT``."""

    scheme: ClassVar[str] = "rsync"

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout

    def copy(self, src: str, dest: Path, *, link: bool = False, checksum: str | None = None) -> list[Path]:
        """See :meth:`Transfer.copy`; ``link`` is ignored (a remote file cannot be linked to).

        ``dest`` is a directory when it is one already or when ``src`` is a directory or names several files
        (a glob, ``dir/`` for a directory's contents); else the file ``src`` is written as ``dest``. The paths
        returned are the top-level entries written (a directory stands for its tree).

        A ``checksum`` (one file, not a glob) is checked with :func:`~sluice.transfers.base.verify` once the
        file arrived; a mismatch removes it.
        """
        if checksum is not None:
            parse_checksum(checksum)  # a malformed one fails before anything moves
            if glob.has_magic(_remote_path(src)):
                raise TransferError(f"a checksum applies to one file; {redact(src)} is a glob")
        was_dir = dest.is_dir()
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = self._run([src], f"{dest}/" if was_dir else str(dest), listing=True)
        if not was_dir and not dest.is_dir():
            written = [dest]
        else:
            tops: dict[str, None] = {}
            for line in out.splitlines():
                _, sep, name = line.partition("|")
                top = name.split("/", 1)[0]
                if sep and top not in ("", "."):
                    tops[top] = None
            written = [dest / t for t in tops]
        if checksum is not None:
            if len(written) != 1:
                raise TransferError(f"a checksum applies to one file; {redact(src)} brought {len(written)} entries")
            verify(written[0], checksum)
        return written

    def put(self, src: Path, dest: str) -> list[Path]:
        """See :meth:`Transfer.put`; a glob sends its matches (sorted) in one run, into ``dest`` as a directory.

        A missing last directory of ``dest`` is made on the remote (``host:dir/``), not its parents.
        """
        pattern = os.path.expanduser(str(src))
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else []
        sources = matches or [pattern]  # no match: rsync names the missing path itself
        self._run(sources, dest, listing=False)
        return [Path(s) for s in sources]

    def _run(self, sources: list[str], dest: str, *, listing: bool) -> str:
        """Run one rsync from ``sources`` to ``dest`` (rewriting ssh:// URLs); its stdout."""
        limit = self.timeout if self.timeout is not None else timeout_s()
        secs = max(1, math.ceil(limit))
        port: int | None = None
        args: list[str] = []
        for url in [*sources, dest]:
            if url.lower().startswith("ssh://"):
                url, url_port = _ssh_url(url)
                port = url_port if url_port is not None else port
            args.append(url)
        daemon = any(a.lower().startswith("rsync://") or _DAEMON.match(a) for a in args)
        argv = ["rsync", "-a", f"--partial-dir={PARTIAL_DIR}", f"--timeout={secs}"]
        if listing:  # every file, sent or already up to date, one "%i|%n" line each
            argv += ["-ii", "--out-format=%i|%n"]
        if daemon:
            argv.append(f"--contimeout={secs}")
        else:
            argv += ["-e", self._rsh(secs, port)]
        argv += ["--", *args]
        if shutil.which("rsync") is None:
            raise TransferError("rsync not found on PATH; install rsync or stage with local paths")
        try:
            p = subprocess.run(argv, capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                               start_new_session=True)
        except OSError as e:
            raise TransferError(f"rsync could not start: {one_line(e)}") from None
        if p.returncode != 0:
            reason, transient = classify(p.returncode, p.stderr)
            raise TransferError(f"rsync failed ({p.returncode}): {reason}", transient=transient)
        return p.stdout

    @staticmethod
    def _rsh(secs: int, port: int | None) -> str:
        """The remote shell: the user's ``RSYNC_RSH`` or ``ssh -o BatchMode=yes``, with the connect timeout
        (and the port of an ssh:// URL) added when it is ssh; options the user wrote there come first and win."""
        rsh = os.environ.get("RSYNC_RSH", "").strip() or "ssh -o BatchMode=yes"
        try:
            program = os.path.basename(shlex.split(rsh)[0])
        except (ValueError, IndexError):
            raise TransferError("RSYNC_RSH is not a command rsync can run") from None
        if program != "ssh":
            if port is not None:
                raise TransferError(f"an ssh:// URL with a port needs ssh as the remote shell, not {program}")
            return rsh
        rsh += f" -o ConnectTimeout={secs}"
        return rsh + (f" -p {port}" if port is not None else "")
