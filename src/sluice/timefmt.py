"""Parsing of wall times as users write them: minutes (`90`, `1.5`) or Slurm-style `[D-]HH:MM[:SS]`."""

from __future__ import annotations

import re

from sluice.errors import UserError

_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+):(\d{1,2})(?::(\d{1,2}))?$")


def wall_minutes(value: str | float | int | None, what: str = "wall time") -> float | None:
    """Minutes as a positive float; None stays None. Bad formats and non-positive values are user errors."""
    if value is None:
        return None
    if isinstance(value, int | float):
        minutes = float(value)
    else:
        s = value.strip()
        m = _CLOCK.match(s)
        if m:
            days, hh, mm, ss = (int(g) if g else 0 for g in m.groups())
            if mm > 59 or ss > 59:
                raise UserError(f"bad {what} {value!r}: minutes and seconds in HH:MM:SS go up to 59; "
                                f"give e.g. 01:30:00, or plain minutes (e.g. 90)")
            minutes = days * 1440 + hh * 60 + mm + ss / 60
        else:
            try:
                minutes = float(s)
            except ValueError:
                raise UserError(
                    f"bad {what} {value!r}: give minutes (e.g. 30) or HH:MM:SS (e.g. 01:30:00)"
                ) from None
    if not minutes > 0:
        raise UserError(f"{what} must be positive, got {value!r}")
    return minutes
