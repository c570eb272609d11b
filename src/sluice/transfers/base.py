"""The interface every transfer module exposes, and the synchronous base that local and rsync share.

A :class:`Transfer` moves a batch of :class:`Item` s between this machine and one kind of remote (chosen by
the URL scheme of the remote side): ``submit(batch) -> handle`` starts it, ``poll(handle) -> status`` says how
it goes, ``cancel(handle)`` stops it. ``copy`` (stage-in: a URL to a local path) and ``put`` (stage-out: a
local path or glob to a URL) move one entry at once and raise :class:`TransferError`.

:class:`SyncTransfer` does the whole batch inside ``submit`` and keeps the outcome in the handle, so ``poll``
needs no state (any instance, even after a restart, answers) and ``cancel`` has nothing left to stop.
"""

from __future__ import annotations

import errno
import hashlib
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import ClassVar

from sluice.errors import DiskFull, Fault, one_line


class TransferError(Fault):
    """A transfer failed; `transient` ones (network, remote busy) are worth retrying."""

    def __init__(self, msg: str, transient: bool = False) -> None:
        super().__init__(msg)
        self.transient = transient


@dataclass(frozen=True)
class Item:
    """One stage entry: stage-in (``put=False``) brings URL ``src`` to local ``dest``; stage-out sends local
    ``src`` (a path or glob) to URL ``dest``. ``link`` asks for a symlink where the module can make one.
    ``checksum`` (stage-in of one file: ``"sha256:<hex>"``, see :func:`verify`) is checked once it arrived."""

    src: str
    dest: str
    link: bool = False
    put: bool = False
    checksum: str | None = None


class TransferState(StrEnum):
    """Where a submitted batch is."""

    ACTIVE = "active"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class TransferStatus:
    """What ``poll`` says: the state, the error for a failed batch (and whether a retry could help), the paths
    written so far."""

    state: TransferState
    message: str = ""
    transient: bool = False
    paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class TransferHandle:
    """What ``submit`` returns: the scheme and the module's own id; a synchronous transfer's final status."""

    scheme: str
    id: str
    outcome: TransferStatus | None = field(default=None, compare=False)


class Transfer(ABC):
    """The interface of one transfer module (one registry entry in :mod:`sluice.transfers`)."""

    scheme: ClassVar[str]

    @abstractmethod
    def submit(self, batch: Sequence[Item]) -> TransferHandle:
        """Start moving ``batch``; errors of the transfer itself are reported by :meth:`poll`, not raised."""

    @abstractmethod
    def poll(self, handle: TransferHandle) -> TransferStatus:
        """How the batch of ``handle`` goes."""

    @abstractmethod
    def cancel(self, handle: TransferHandle) -> None:
        """Stop the batch; one that already ended is left alone."""

    @abstractmethod
    def copy(self, src: str, dest: Path, *, link: bool = False, checksum: str | None = None) -> list[Path]:
        """Stage-in: bring URL ``src`` to ``dest`` (a file path or an existing directory); what was written.

        With ``checksum`` the one file written is checked with :func:`verify` (removed if it does not match)."""

    @abstractmethod
    def put(self, src: Path, dest: str) -> list[Path]:
        """Stage-out: send a local file or glob to URL ``dest``; what was sent."""


CHECKSUM_ALGORITHMS = tuple(sorted(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake")))
"""The hashlib algorithms a checksum may name, as in ``"sha256:<hex>"`` (md5, sha1, sha512, sha3_256, ...)."""


def parse_checksum(checksum: str) -> tuple[str, str]:
    """(algorithm, lower-case hex digest) of ``"<algorithm>:<hex>"``; a malformed one is a TransferError, raised
    before anything is moved."""
    algo, _, want = checksum.strip().partition(":")
    algo, want = algo.lower(), want.strip().lower()
    if algo in CHECKSUM_ALGORITHMS and len(want) == 2 * hashlib.new(algo).digest_size:
        try:
            bytes.fromhex(want)
            return algo, want
        except ValueError:
            pass
    raise TransferError(f"bad checksum {checksum!r}: give <algorithm>:<hex digest> (its full length), e.g."
                        f" sha256:9f86d08...; algorithms: {', '.join(CHECKSUM_ALGORITHMS)}")


def verify(path: Path, checksum: str | None) -> None:
    """Check the file at ``path`` against ``checksum`` (``"sha256:<hex>"``; md5, sha1, sha512 too); None checks
    nothing. A mismatch removes the file (a symlink: the link, never its target) and is a non-transient
    :class:`TransferError` naming the expected and the actual digest."""
    if checksum is None:
        return
    algo, want = parse_checksum(checksum)
    if not path.is_file():
        raise TransferError(f"a checksum applies to one file; {path} is not a regular file")
    with path.open("rb") as f:
        got = hashlib.file_digest(f, algo).hexdigest()
    if got != want:
        path.unlink()
        raise TransferError(f"checksum mismatch for {path.name}: expected {algo}:{want}, got {algo}:{got}"
                            " (the file was removed)")


class SyncTransfer(Transfer):
    """A transfer that does its whole batch in :meth:`submit` with :meth:`copy` / :meth:`put`."""

    def submit(self, batch: Sequence[Item]) -> TransferHandle:
        """Move every item in order; the first failure ends the batch as FAILED with its reason."""
        paths: list[Path] = []
        outcome = TransferStatus(TransferState.DONE)
        for item in batch:
            try:
                if item.put:
                    paths += self.put(Path(item.src), item.dest)
                else:
                    paths += self.copy(item.src, Path(item.dest), link=item.link, checksum=item.checksum)
            except TransferError as e:
                outcome = TransferStatus(TransferState.FAILED, one_line(e), e.transient)
                break
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk's fault, not this item's: say so at once
                    raise DiskFull(f"disk full while staging {item.src}: {one_line(e)}") from e
                outcome = TransferStatus(TransferState.FAILED, one_line(e))
                break
        outcome = TransferStatus(outcome.state, outcome.message, outcome.transient, tuple(paths))
        return TransferHandle(self.scheme, uuid.uuid4().hex, outcome)

    def poll(self, handle: TransferHandle) -> TransferStatus:
        """The outcome ``submit`` kept in the handle."""
        if handle.outcome is None:
            raise TransferError(f"{handle.id} is not a handle of a synchronous {self.scheme} transfer")
        return handle.outcome

    def cancel(self, handle: TransferHandle) -> None:
        """Nothing to stop: the batch ended inside ``submit``."""
