"""The `SLUICE_*` environment variables, named once, and the one builder of a job's environment.

A job's process, its hooks (preprocess, postprocess, handlers) and the launcher batch job all meet through
these names; spelling them in one place means a rename cannot leave a reader behind.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

WORKSPACE = "SLUICE_WORKSPACE"
"""The workspace directory: set for jobs, hooks and launcher batch jobs; `--workspace` reads it too."""
DB_URL = "SLUICE_DB_URL"
"""Overrides the database URL of sluice.toml."""
JOB_ID = "SLUICE_JOB_ID"
"""The id of the job a process runs as (`sluice.current_job()`, `spawn_child()`)."""
BATCH_ID = "SLUICE_BATCH_ID"
"""sluice's own id of the launcher batch job (the `batch_jobs` row), set by the service."""
BATCH_JOB = "SLUICE_BATCH_JOB"
"""`<scheduler>:<native id>` of the allocation, exported by every batch script."""
QUEUE = "SLUICE_QUEUE"
"""The queue a launcher batch job was submitted to: its launcher takes jobs pinned to that queue."""
ALLOCATION_END = "SLUICE_ALLOCATION_END"
"""Epoch seconds at which the allocation ends; beats what the scheduler says."""
CORES_PER_NODE = "SLUICE_CORES_PER_NODE"
"""Replaces the cores per node that the scheduler reports."""
GPUS_PER_NODE = "SLUICE_GPUS_PER_NODE"
"""Replaces the GPUs per node that the scheduler reports."""
RSYNC_TIMEOUT = "SLUICE_RSYNC_TIMEOUT"
"""Seconds an rsync stage-in/out may wait on the remote (connect, or no data moving) before it fails; 300."""
GLOBUS_TOKEN = "SLUICE_GLOBUS_TOKEN"
"""A Globus Transfer access token for globus:// staging (else the `globus login` tokens are read)."""
GLOBUS_LOCAL_ENDPOINT = "SLUICE_GLOBUS_LOCAL_ENDPOINT"
"""`ENDPOINT_ID[:LOCAL=ENDPOINT_PATH,...]`: the Globus endpoint serving this machine's files, for globus://."""
HTTP_TOKEN = "SLUICE_HTTP_TOKEN"
"""A bearer token for https:// stage-in (sent only over https, to the stage URL's own host; never logged)."""
SPAWN_ENGINE = "SLUICE_SPAWN_ENGINE"
"""`c` or `python`: which engine starts tasks (default: the compiled one where it was built, else Python)."""

_NOT_INHERITED = (JOB_ID, "CUDA_VISIBLE_DEVICES")
"""Set per job: a launcher started from inside a job must not pass its own values on."""


def base(workspace: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What every job and hook of this workspace starts from: the launcher's environment, minus per-job values."""
    env = dict(os.environ if environ is None else environ)
    for k in _NOT_INHERITED:
        env.pop(k, None)
    env[WORKSPACE] = str(Path(workspace))
    return env


def job_vars(job_id: int, app_env: Mapping[str, str] | None, job_env: Mapping[str, str] | None,
             threads_per_rank: int = 1, base_env: Mapping[str, str] = {}) -> dict[str, str]:
    """A job's own variables, laid over `base`: the app's, then the job's (the job wins), then sluice's.

    OMP_NUM_THREADS follows threads_per_rank unless the app, the job or the launcher's environment set it.
    """
    extra: dict[str, str] = {}
    if app_env:
        extra.update(app_env)
    if job_env:
        extra.update(job_env)
    extra[JOB_ID] = str(job_id)
    if threads_per_rank > 1 and "OMP_NUM_THREADS" not in extra and "OMP_NUM_THREADS" not in base_env:
        extra["OMP_NUM_THREADS"] = str(threads_per_rank)
    return extra


def job_environment(workspace: str | os.PathLike[str], job_id: int, app_env: Mapping[str, str] | None,
                    job_env: Mapping[str, str] | None, threads_per_rank: int = 1) -> dict[str, str]:
    """The whole environment of a job's process or hook, as one dict."""
    env = base(workspace)
    env.update(job_vars(job_id, app_env, job_env, threads_per_rank, env))
    return env
