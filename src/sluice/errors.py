"""Errors a user can fix. The CLI prints them as one line on stderr and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment: the message names the problem and the fix; nothing was changed."""


class WorkspaceNotFound(UserError):
    """No sluice.toml at the given path or in any parent directory."""


class DatabaseError(UserError):
    """The database cannot be reached, or its schema does not match this version of sluice."""


class SchemaOutOfDate(DatabaseError):
    """The database was made by an older sluice; `sluice db upgrade` fixes it."""


class IllegalTransition(UserError):
    """A state change that the transition table does not allow."""
