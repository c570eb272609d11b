"""Globus (``globus://ENDPOINT_ID/path``): asynchronous transfers between Globus endpoints, with globus-sdk.

One side of every item is a ``globus://`` URL; the other is a path on this machine's file systems, which a
*local* Globus endpoint (Globus Connect Personal, or a Globus Connect Server collection on the same shared file
system) serves. That endpoint comes from ``SLUICE_GLOBUS_LOCAL_ENDPOINT``::

    SLUICE_GLOBUS_LOCAL_ENDPOINT=ENDPOINT_ID                      # local paths are the endpoint's paths
    SLUICE_GLOBUS_LOCAL_ENDPOINT=ENDPOINT_ID:/lus/proj=/proj,/home/me=/~   # LOCAL_PREFIX=ENDPOINT_PREFIX, ...

With prefixes, the longest one that holds a local path maps it, and a path under none of them is an error.
Both sides may be ``globus://`` URLs (a third-party transfer between two facilities); no local endpoint is
needed then.

``submit`` sends one Globus task per (source endpoint, destination endpoint) pair of the batch; the handle's id
is the task ids joined by commas, so any instance (after a restart too) can ``poll`` or ``cancel`` it. A source
URL that ends in ``/`` is a directory (a recursive transfer); Globus does not expand globs, so a glob in a
``globus://`` URL is an error, while a local glob (stage-out) is expanded here. Every task verifies checksums
after the transfer and skips files whose contents already match (``sync_level="checksum"``); an item's
``checksum`` (``ALGO:HEX``, md5/sha1/sha256/sha512) is checked by Globus too.

Credentials come from the environment, never from the database or the logs: ``SLUICE_GLOBUS_TOKEN`` (a Transfer
access token), else the transfer token the ``globus`` CLI stored at ``globus login`` (``~/.globus/cli/storage.db``,
read-only, profile and environment as the CLI's ``GLOBUS_PROFILE`` and ``GLOBUS_SDK_ENVIRONMENT`` choose).
globus-sdk is imported on first use; without it, a one-line :class:`TransferError` says to
``pip install sluice[globus]``.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from sluice import environ as env_names
from sluice.errors import one_line
from sluice.transfers.base import Item, Transfer, TransferError, TransferHandle, TransferState, TransferStatus

if TYPE_CHECKING:
    import globus_sdk

from sluice.transfers.globus_parts import (
    CLI_STORAGE,
    LOGIN_HINT,
    SCHEME,
    LocalEndpoint,
    Task,
    Want,
    _checksum,
    _sdk,
    _status_of,
    access_token,
    combine,
    is_globus,
    parse_url,
)


class GlobusTransfer(Transfer):
    """Globus Transfer tasks through globus-sdk's TransferClient (see the module's doc)."""

    scheme: ClassVar[str] = SCHEME

    def __init__(self, client: globus_sdk.TransferClient | None = None, *,
                 environ: Mapping[str, str] | None = None, storage: Path | None = CLI_STORAGE,
                 timeout_s: float = 24 * 3600, interval_s: float = 2.0, max_interval_s: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """``client`` replaces the one built from the credentials (tests); ``environ`` replaces os.environ;
        ``storage`` is the globus CLI's token file (None: do not read it); copy/put wait up to ``timeout_s``,
        polling every ``interval_s``, growing to ``max_interval_s``."""
        self._client_given = client
        self._environ = environ
        self.storage = storage
        self.timeout_s, self.interval_s, self.max_interval_s = timeout_s, interval_s, max_interval_s
        self._sleep = sleep
        self._cached: tuple[str, Any] | None = None
        self._secret = ""
        self._source = "credentials"

    # --- the pieces -------------------------------------------------------------------------------------

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def client(self) -> globus_sdk.TransferClient:
        """The TransferClient (built once per token from :func:`access_token`)."""
        if self._client_given is not None:
            return self._client_given
        token, self._source = access_token(self.environ, self.storage)
        self._secret = token
        if self._cached is None or self._cached[0] != token:
            sdk = _sdk()
            self._cached = (token, sdk.TransferClient(authorizer=sdk.AccessTokenAuthorizer(token),
                                                      app_name="sluice"))
        return self._cached[1]

    def _redact(self, text: str) -> str:
        token = self._secret or self.environ.get(env_names.GLOBUS_TOKEN, "").strip()
        return text.replace(token, "***") if token else text

    def _error(self, e: Exception, what: str) -> TransferError:
        """A globus-sdk error as a one-line TransferError; 5xx and network errors are transient."""
        sdk = _sdk()
        if isinstance(e, TransferError):
            return TransferError(self._redact(one_line(e)), e.transient)
        if isinstance(e, sdk.GlobusAPIError):
            code, status = e.code or "", e.http_status
            msg = one_line(e.message or "") if isinstance(e.message, str) else ""
            if status == 401:
                text = f"Globus refused the credentials from {self._source} ({status} {code}) for {what}: {LOGIN_HINT}"
            elif code == "ConsentRequired" or "consent" in msg.lower():
                text = (f"{what}: Globus needs a consent the credentials from {self._source} lack ({code}: {msg}); "
                        "`globus ls ENDPOINT_ID:/` prints the `globus session consent ...` command to run")
            else:
                text = f"{what}: Globus answered {status} {code}: {msg}"
            return TransferError(self._redact(one_line(text)), transient=status >= 500 or status == 429)
        if isinstance(e, sdk.NetworkError):
            return TransferError(self._redact(one_line(f"{what}: cannot reach Globus: {type(e).__name__}")), True)
        return TransferError(self._redact(one_line(f"{what}: {type(e).__name__}: {one_line(e)}")))

    def plan(self, batch: Sequence[Item | Want]) -> list[Task]:
        """One :class:`Task` per endpoint pair, in the order the batch first names it; errors in the batch or
        the configuration are TransferErrors, raised before anything is sent."""
        sdk = _sdk()
        wants = [w if isinstance(w, Want) else Want.of(w) for w in batch]
        local: LocalEndpoint | None = None
        tasks: dict[tuple[str, str], Task] = {}

        def local_ep() -> LocalEndpoint:
            nonlocal local
            if local is None:
                local = LocalEndpoint.from_environ(self.environ)
            return local

        for item in wants:
            checksum = item.checksum
            pairs: list[tuple[str, str, str, str, bool, Path | None]] = []  # src ep, src, dst ep, dst, dir, local
            if item.put:
                if not is_globus(item.dest):
                    raise TransferError(f"stage-out to {item.dest!r} is not a globus:// URL")
                dst_ep, dst = parse_url(item.dest)
                pattern = os.path.expanduser(item.src)
                matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else (
                    [pattern] if os.path.exists(pattern) else [])
                if not matches:
                    raise TransferError(f"stage-out source not found: {item.src}")
                into = dst.endswith("/") or len(matches) > 1
                for m in matches:
                    name = os.path.basename(m.rstrip("/"))
                    is_dir = os.path.isdir(m)
                    target = (dst.rstrip("/") + "/" + name) if into else dst
                    slash = "/" if is_dir else ""
                    pairs.append((local_ep().id, local_ep().path(m + slash), dst_ep, target + slash, is_dir, Path(m)))
            else:
                if not is_globus(item.src):
                    raise TransferError(f"stage-in from {item.src!r} is not a globus:// URL")
                src_ep, src = parse_url(item.src)
                is_dir = src.endswith("/")
                name = PurePosixPath(src.rstrip("/")).name
                if is_globus(item.dest):
                    dst_ep, dst = parse_url(item.dest)
                    target = (dst.rstrip("/") + "/" + name) if dst.endswith("/") else dst
                    pairs.append((src_ep, src, dst_ep, target + ("/" if is_dir else ""), is_dir, None))
                else:
                    dest = Path(os.path.expanduser(item.dest))
                    target_path = dest / name if dest.is_dir() else dest
                    target_path = Path(os.path.abspath(target_path))
                    pairs.append((src_ep, src, local_ep().id,
                                  local_ep().path(str(target_path) + ("/" if is_dir else "")), is_dir, target_path))
            for s_ep, s, d_ep, d, is_dir, local_path in pairs:
                if checksum and is_dir:
                    raise TransferError(f"a checksum names one file, but {item.src} is a directory")
                task = tasks.get((s_ep, d_ep))
                if task is None:
                    data = sdk.TransferData(s_ep, d_ep, sync_level="checksum", verify_checksum=True,
                                            preserve_timestamp=True, notify_on_succeeded=False)
                    task = tasks[(s_ep, d_ep)] = Task(s_ep, d_ep, data)
                task.data.add_item(s, d, recursive=is_dir, **_checksum(checksum, item.src))
                task.kinds.add("stage-out" if item.put else "stage-in")
                if local_path is not None:
                    (task.sent if item.put else task.written).append(local_path)
        for task in tasks.values():
            kind = next(iter(task.kinds)) if len(task.kinds) == 1 else "staging"
            n = len(task.data["DATA"])
            task.data["label"] = f"sluice {kind} {n} item{'' if n == 1 else 's'}"
        return list(tasks.values())

    @staticmethod
    def task_ids(handle: TransferHandle) -> list[str]:
        """The Globus task ids a handle names (its id is them, joined by commas)."""
        if handle.scheme != SCHEME:
            raise TransferError(f"{handle.scheme}:{handle.id} is not a handle of a globus transfer")
        return [t for t in handle.id.split(",") if t]

    @staticmethod
    def handle(task_ids: Sequence[str], outcome: TransferStatus | None = None) -> TransferHandle:
        return TransferHandle(SCHEME, ",".join(task_ids), outcome)

    def _send(self, tasks: Sequence[Task]) -> list[str]:
        """Submit the tasks; if one fails, the ones already sent are cancelled and the error raised."""
        client = self.client()
        for task in tasks:
            for p in task.written:
                p.parent.mkdir(parents=True, exist_ok=True)
        sent: list[str] = []
        for task in tasks:
            try:
                sent.append(str(client.submit_transfer(task.data)["task_id"]))
            except Exception as e:
                err = self._error(e, f"submitting a globus transfer {task.source} -> {task.destination}")
                self._cancel_ids(sent, quiet=True)
                raise err from None
        return sent

    def _cancel_ids(self, ids: Sequence[str], quiet: bool = False) -> None:
        if not ids:
            return
        sdk = _sdk()
        try:
            client = self.client()
        except TransferError:
            if quiet:
                return
            raise
        for tid in ids:
            try:
                client.cancel_task(tid)
            except sdk.GlobusAPIError as e:
                if e.http_status in (404, 409) or quiet:  # unknown, or already ended
                    continue
                raise self._error(e, f"cancelling globus task {tid}") from None
            except Exception as e:
                if not quiet:
                    raise self._error(e, f"cancelling globus task {tid}") from None

    # --- the Transfer interface -------------------------------------------------------------------------

    def submit(self, batch: Sequence[Item]) -> TransferHandle:
        """One Globus task per endpoint pair. A bad batch, missing configuration or credentials, or a refused
        submission give a handle whose outcome is FAILED with the reason (nothing left running)."""
        try:
            return self.handle(self._send(self.plan(batch)))
        except TransferError as e:
            return self.handle([], TransferStatus(TransferState.FAILED, self._redact(one_line(e)), e.transient))
        except OSError as e:
            return self.handle([], TransferStatus(TransferState.FAILED, one_line(e)))

    def poll(self, handle: TransferHandle) -> TransferStatus:
        """get_task for each task: SUCCEEDED -> DONE, ACTIVE -> ACTIVE, INACTIVE (expired credentials) -> FAILED,
        transient, saying to log in again; FAILED -> FAILED with the task's fatal error (CANCELLED if it was
        cancelled). Not being able to ask (network, credentials) raises TransferError: the tasks may still run."""
        if handle.outcome is not None:
            return handle.outcome
        ids = self.task_ids(handle)
        if not ids:
            raise TransferError("a globus handle without task ids")
        client = self.client()
        statuses = []
        for tid in ids:
            try:
                task = client.get_task(tid)
            except Exception as e:
                raise self._error(e, f"asking Globus about task {tid}") from None
            statuses.append(_status_of(task.data))
        return combine(statuses)

    def cancel(self, handle: TransferHandle) -> None:
        """cancel_task for each task; ones that already ended are left alone."""
        self._cancel_ids(self.task_ids(handle))

    def wait(self, handle: TransferHandle) -> TransferStatus:
        """Poll until the batch ends or ``timeout_s`` passes (then it is cancelled: a transient failure);
        transient errors of asking are retried until then."""
        deadline = time.monotonic() + self.timeout_s
        interval = self.interval_s
        while True:
            try:
                status = self.poll(handle)
                if status.state is not TransferState.ACTIVE:
                    return status
            except TransferError as e:
                if not e.transient:
                    raise
            if time.monotonic() >= deadline:
                self._cancel_ids(self.task_ids(handle), quiet=True)
                return TransferStatus(TransferState.FAILED, f"globus task {handle.id} did not finish in "
                                      f"{self.timeout_s:g} s; cancelled", True)
            self._sleep(interval)
            interval = min(self.max_interval_s, interval * 1.5)

    def _run(self, want: Want) -> list[Path]:
        try:
            tasks = self.plan([want])
            handle = self.handle(self._send(tasks))
            status = self.wait(handle)
        except TransferError as e:
            raise TransferError(self._redact(one_line(e)), e.transient) from None
        if status.state is TransferState.DONE:
            return [p for t in tasks for p in t.written + t.sent]
        if status.state is TransferState.FAILED and status.transient:
            self._cancel_ids(self.task_ids(handle), quiet=True)  # an INACTIVE task must not resume beside a retry
        raise TransferError(status.message or f"globus transfer {status.state}", status.transient)

    def copy(self, src: str, dest: Path, *, link: bool = False, checksum: str | None = None) -> list[Path]:
        """Stage-in, blocking: ``globus://EP/path`` to local ``dest`` (a file path or an existing directory)
        through the local endpoint; what was written. ``link`` is ignored; ``checksum`` (ALGO:HEX) is verified
        by Globus."""
        return self._run(Want(src, str(dest), checksum=checksum))

    def put(self, src: Path, dest: str) -> list[Path]:
        """Stage-out, blocking: a local file, directory or glob to ``globus://EP/path`` (a directory if it ends
        in ``/`` or several files match); what was sent."""
        return self._run(Want(str(src), dest, put=True))
