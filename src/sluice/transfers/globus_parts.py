"""The pieces of Globus staging that need no network: URLs, the local endpoint and its path mapping, checksums,
credentials, and what a task's status means. globus.py sends and watches the tasks."""

from __future__ import annotations

import glob
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from sluice import environ as env_names
from sluice.errors import one_line
from sluice.transfers.base import Item, TransferError, TransferState, TransferStatus

if TYPE_CHECKING:
    pass

SCHEME = "globus"
TRANSFER_RESOURCE_SERVER = "transfer.api.globus.org"
CLI_STORAGE = Path("~/.globus/cli/storage.db")
"""Where the globus CLI (Linux, macOS) keeps the tokens of ``globus login``."""
_CLI_ENV, _CLI_PROFILE = "GLOBUS_SDK_ENVIRONMENT", "GLOBUS_PROFILE"  # the CLI's own variables, not sluice's
CHECKSUM_ALGORITHMS = {"md5": "MD5", "sha1": "SHA1", "sha256": "SHA256", "sha512": "SHA512"}
"""hashlib's name of an algorithm -> Globus's ``checksum_algorithm``."""

INSTALL_HINT = "globus:// URLs need globus-sdk: pip install sluice[globus]"
LOGIN_HINT = (f"run `globus login` (pip install globus-cli; sluice reads the CLI's tokens) or set "
              f"{env_names.GLOBUS_TOKEN} to a Globus Transfer access token")
_EXPIRY_MARGIN_S = 60


def _sdk() -> ModuleType:
    """globus_sdk, imported now; a clear TransferError if it is not installed."""
    try:
        import globus_sdk
    except ImportError:
        raise TransferError(INSTALL_HINT) from None
    return globus_sdk


def _endpoint_id(value: str, where: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise TransferError(f"{where}: {value!r} is not a Globus endpoint id (a UUID, as `globus endpoint "
                            "search` or the web app shows)") from None


def parse_url(url: str) -> tuple[str, str]:
    """(endpoint id, path) of ``globus://ENDPOINT_ID/path``; the path keeps a trailing ``/`` (a directory)."""
    p = urlparse(url)
    if p.scheme.lower() != SCHEME or not p.netloc or not p.path or p.path == "/":
        raise TransferError(f"bad Globus URL {url!r}: give globus://ENDPOINT_ID/path")
    if glob.has_magic(p.path):
        raise TransferError(f"{url}: Globus does not expand globs; name a file, or a directory ending in '/'")
    return _endpoint_id(p.netloc, url), p.path


def is_globus(url: str) -> bool:
    return url.lower().startswith(SCHEME + "://")


@dataclass(frozen=True)
class LocalEndpoint:
    """The Globus endpoint that serves this machine's files, and how local paths map to its paths."""

    id: str
    prefixes: tuple[tuple[str, str], ...] = ()
    """(local prefix, endpoint prefix) pairs, longest local prefix first."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> LocalEndpoint:
        """Read ``SLUICE_GLOBUS_LOCAL_ENDPOINT``; unset or malformed is a one-line, non-transient TransferError."""
        name = env_names.GLOBUS_LOCAL_ENDPOINT
        value = environ.get(name, "").strip()
        if not value:
            raise TransferError(f"{name} is not set: a globus:// stage entry needs the id of the Globus endpoint "
                                f"that serves this machine's files, e.g. {name}=ENDPOINT_ID (`globus endpoint "
                                "local-id` prints a Globus Connect Personal one)")
        ep, _, mapping = value.partition(":")
        prefixes = []
        for pair in filter(None, (p.strip() for p in mapping.split(","))):
            local, eq, remote = pair.partition("=")
            if not eq or not local.startswith("/") or not remote:
                raise TransferError(f"{name}: bad prefix mapping {pair!r}; give LOCAL_PREFIX=ENDPOINT_PREFIX, "
                                    "e.g. /lus/proj=/proj")
            prefixes.append((os.path.normpath(local), remote))
        prefixes.sort(key=lambda p: len(p[0]), reverse=True)
        return cls(_endpoint_id(ep.strip(), name), tuple(prefixes))

    def path(self, local: str | os.PathLike[str]) -> str:
        """The endpoint's path for a local path (absolute; a trailing ``/`` is kept)."""
        text = os.fspath(local)
        absolute = os.path.abspath(os.path.expanduser(text))
        slash = "/" if text.endswith("/") and absolute != "/" else ""
        if not self.prefixes:
            return absolute + slash
        for prefix, remote in self.prefixes:
            if absolute == prefix or absolute.startswith(prefix.rstrip("/") + "/"):
                rest = PurePosixPath(absolute).relative_to(prefix)
                mapped = str(PurePosixPath(remote) / rest) if str(rest) != "." else remote
                return mapped + slash
        raise TransferError(f"{absolute} is under no prefix that {env_names.GLOBUS_LOCAL_ENDPOINT} maps "
                            f"({', '.join(p for p, _ in self.prefixes)}); add LOCAL=ENDPOINT_PATH for it")


def _checksum(value: str | None, what: str) -> dict[str, str]:
    """add_item's keywords for an ``ALGO:HEX`` checksum (none for None)."""
    if not value:
        return {}
    algo, _, digest = value.partition(":")
    name = CHECKSUM_ALGORITHMS.get(algo.lower().replace("-", ""))
    if name is None or not digest:
        raise TransferError(f"{what}: Globus checks only {', '.join(CHECKSUM_ALGORITHMS)} checksums (ALGO:HEX), "
                            f"got {value.partition(':')[0]!r}")
    return {"external_checksum": digest.lower(), "checksum_algorithm": name}


@dataclass(frozen=True)
class Want:
    """What one item asks for: ``src`` to ``dest``; ``put`` for stage-out; ``checksum`` as ALGO:HEX."""

    src: str
    dest: str
    put: bool = False
    checksum: str | None = None

    @classmethod
    def of(cls, item: Item) -> Want:
        return cls(item.src, item.dest, item.put, getattr(item, "checksum", None))  # older Items lack checksum


@dataclass
class Task:
    """One Globus task to submit: its endpoint pair, its document (a globus_sdk.TransferData), the local paths
    it writes (stage-in) and sends (stage-out)."""

    source: str
    destination: str
    data: Any
    written: list[Path] = field(default_factory=list)
    sent: list[Path] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)


def access_token(environ: Mapping[str, str], storage: Path | None = CLI_STORAGE) -> tuple[str, str]:
    """(token, where it came from) for Globus Transfer: ``SLUICE_GLOBUS_TOKEN``, else the globus CLI's stored
    transfer token (read-only). None found, or only an expired one: a one-line TransferError saying what to run.
    The token itself is never put in a message."""
    token = environ.get(env_names.GLOBUS_TOKEN, "").strip()
    if token:
        return token, env_names.GLOBUS_TOKEN
    path = Path(os.path.expanduser(storage)) if storage is not None else None
    if path is None or not path.is_file():
        raise TransferError(f"no Globus credentials: {LOGIN_HINT}")
    namespace = "userprofile/" + (environ.get(_CLI_ENV) or "production")
    if environ.get(_CLI_PROFILE):
        namespace += "/" + environ[_CLI_PROFILE]
    _sdk()
    from globus_sdk.token_storage import SQLiteTokenStorage

    store = SQLiteTokenStorage(path, namespace=namespace)
    try:
        data = store.get_token_data(TRANSFER_RESOURCE_SERVER)
    except Exception as e:  # a damaged or foreign file: say which, never its content
        raise TransferError(f"cannot read the globus CLI's tokens in {path}: {type(e).__name__}; "
                            f"{LOGIN_HINT}") from None
    finally:
        store.close()
    if data is None:
        raise TransferError(f"no Globus transfer token in {path} ({namespace}): {LOGIN_HINT}")
    if data.expires_at_seconds <= time.time() + _EXPIRY_MARGIN_S:
        raise TransferError(f"the globus CLI's transfer token in {path} has expired: run `globus task list` "
                            f"(the CLI refreshes it) or `globus login --force`, or set {env_names.GLOBUS_TOKEN}")
    return data.access_token, f"the globus CLI's login ({path})"


def _status_of(task: Mapping[str, Any]) -> TransferStatus:
    """One get_task document as a TransferStatus."""
    tid = task.get("task_id", "?")
    status = str(task.get("status", "")).upper()
    nice = task.get("nice_status") or ""
    if status == "SUCCEEDED":
        return TransferStatus(TransferState.DONE)
    if status == "ACTIVE":
        note = f"globus task {tid}: {nice}" if nice and nice not in ("OK", "Queued") else ""
        return TransferStatus(TransferState.ACTIVE, note)
    if status == "INACTIVE":
        why = f" ({nice})" if nice else ""
        return TransferStatus(TransferState.FAILED, f"globus task {tid} is INACTIVE{why}: its credentials expired "
                              f"or need consent; {LOGIN_HINT}, then retry (cancel the paused task first)", True)
    fatal = task.get("fatal_error") or {}
    code = fatal.get("code") or nice or status or "unknown status"
    if code in ("CANCELED", "CANCELLED") or task.get("canceled_by_admin"):
        return TransferStatus(TransferState.CANCELLED, f"globus task {tid} was cancelled")
    detail = fatal.get("description") or task.get("nice_status_short_description") or ""
    return TransferStatus(TransferState.FAILED, one_line(f"globus task {tid} failed: {code}"
                                                         + (f": {detail}" if detail else "")))


def combine(statuses: Sequence[TransferStatus]) -> TransferStatus:
    """The batch's status from its tasks': a non-transient failure, else a transient one, else cancelled, else
    active, else done."""
    for pick in (lambda s: s.state is TransferState.FAILED and not s.transient,
                 lambda s: s.state is TransferState.FAILED,
                 lambda s: s.state is TransferState.CANCELLED,
                 lambda s: s.state is TransferState.ACTIVE):
        for s in statuses:
            if pick(s):
                return s
    return TransferStatus(TransferState.DONE)
