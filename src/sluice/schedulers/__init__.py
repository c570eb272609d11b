"""Batch schedulers behind one narrow interface (:mod:`sluice.schedulers.base`).

Schedulers are named by dotted path and imported on first use, so choosing Slurm imports no PBS code.

Errors: :class:`SchedulerError` (and :class:`SchedulerUnavailable`) are :class:`sluice.errors.Fault` s, the
scheduler's or the machine's doing; an unknown scheduler name, bad options and a :class:`BadBatchRequest`
are :class:`sluice.errors.UserError` s.
"""

from __future__ import annotations

import importlib
from typing import Any

from sluice.errors import UserError
from sluice.schedulers.base import (
    BadBatchRequest,
    BatchRequest,
    BatchState,
    BatchStatus,
    Scheduler,
    SchedulerError,
    SchedulerUnavailable,
)

__all__ = [
    "BadBatchRequest",
    "BatchRequest",
    "BatchState",
    "BatchStatus",
    "Scheduler",
    "SchedulerError",
    "SchedulerUnavailable",
    "SCHEDULERS",
    "get_scheduler",
]

SCHEDULERS: dict[str, str] = {
    "local": "sluice.schedulers.local:LocalScheduler",
    "slurm": "sluice.schedulers.slurm:SlurmScheduler",
    "pbs": "sluice.schedulers.pbs:PBSScheduler",
    "cobalt": "sluice.schedulers.cobalt:CobaltScheduler",
    "lsf": "sluice.schedulers.lsf:LSFScheduler",
}
"""Scheduler name -> ``module:Class``."""


def get_scheduler(name: str, **options: Any) -> Scheduler:
    """Return a new scheduler by name; ``options`` go to its constructor (e.g. ``seconds_per_minute``)."""
    target = SCHEDULERS.get(name.lower())
    if target is None:
        raise UserError(f"unknown scheduler {name!r}; valid names: {', '.join(SCHEDULERS)}")
    module, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    try:
        scheduler: Scheduler = cls(**options)
    except TypeError as exc:
        raise UserError(f"bad options for scheduler {name!r}: {exc}") from None
    return scheduler
