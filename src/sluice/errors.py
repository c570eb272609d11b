"""Two kinds of error, so callers never have to guess which one they hold.

* :class:`UserError`: the user's mistake (a bad flag, field, file or request). One line naming the problem and
  the fix; the CLI exits 2, HTTP answers 4xx, and nothing was changed.
* :class:`Fault`: the environment or the code failed (database unreachable, scheduler down, disk full). One
  line too, but the CLI exits 1, it is logged, and a caller that can (the launcher, the service) retries it
  when it is ``transient``.

Every message is made with :func:`one_line`, which never raises, even for exceptions without a message.
"""

from __future__ import annotations


def one_line(e: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (or its type's name), cut to `limit` characters."""
    text = e if isinstance(e, str) else str(e)
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:limit]
    return "" if isinstance(e, str) else type(e).__name__


class SluiceError(Exception):
    """Everything sluice raises on purpose."""


class UserError(SluiceError):
    """Bad input: the message names the problem and the fix; nothing was changed."""


class WorkspaceNotFound(UserError):
    """No sluice.toml at the given path or in any parent directory."""


class IllegalTransition(UserError):
    """A state change that the transition table does not allow."""


class SchemaOutOfDate(UserError):
    """The database was made by an older sluice; `sluice db upgrade` fixes it."""


class Fault(SluiceError):
    """The environment or sluice itself failed, not the user's input. `transient` ones are worth retrying."""

    transient: bool = False


class DatabaseError(Fault):
    """The database cannot be reached, or answered with an error that is not the user's doing. `conflict`: the
    server rolled this transaction back to break a deadlock (nothing of it was written; running it again will
    do)."""

    transient = True
    conflict = False


class DiskFull(Fault):
    """The file system holding the database or the jobs' files is full (or over quota): retrying cannot help."""

    transient = False
