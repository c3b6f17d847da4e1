"""Ray Jobs: ship this checkout to a Ray cluster and run a ``grl-aecnn`` command there.

The job runs ``python -m grl_aecnn.cli ...`` inside a copy of the project (the runtime_env
``working_dir``), so the cluster runs exactly the code and ``tune_configs/`` the user has.
The cluster's Python must already hold the dependencies (an image or node setup built from
``requirements.txt``); see ``platform/README.md`` for why and for the alternatives.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from grl_aecnn.config import PROJECT_ROOT, ConfigError
from grl_aecnn.runtime import CLUSTER_OWNED, RAY_ENV_DEFAULTS

if TYPE_CHECKING:
    from ray.job_submission import JobDetails, JobStatus, JobSubmissionClient

RUNTIME_ENV_FILE = PROJECT_ROOT / "platform" / "runtime_env.yaml"
# Local settings a job inherits when set; credentials are not shipped (runtime_env is
# visible to anyone who can read the dashboard): configure them on the cluster's nodes.
PASS_THROUGH = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
METADATA_KEY = "grl_aecnn.command"


class ClusterError(RuntimeError):
    """A job cannot be sent or managed; ``exit_code`` says why (2: usage, 3: unreachable)."""

    exit_code = 3


class NoClusterAddress(ClusterError):
    """No usable address was given: a usage error."""

    exit_code = 2


def job_env_vars() -> dict[str, str]:
    """Process defaults every job gets (the user's own values win), minus cluster-owned keys."""
    return {key: os.environ.get(key, value) for key, value in RAY_ENV_DEFAULTS.items()
            if key not in CLUSTER_OWNED}


def cluster_address(address: str | None) -> str:
    """The Jobs API address (the head's dashboard URL) from ``--address`` or ``$RAY_ADDRESS``."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise NoClusterAddress(
            "no Ray cluster address: pass --address http://HEAD:8265 or export RAY_ADDRESS=http://HEAD:8265 "
            "(the head's dashboard address; try one locally with "
            "`ray start --head --dashboard-host 127.0.0.1`, see docs/operations.md)"
        )
    if "://" not in address:
        raise NoClusterAddress(
            f"cluster address {address!r} looks like a GCS address; jobs go to the dashboard address, "
            "e.g. http://HEAD:8265"
        )
    return address


def connect(address: str | None) -> "JobSubmissionClient":
    """A Jobs API client; ClusterError when nothing answers there."""
    from ray.job_submission import JobSubmissionClient

    url = cluster_address(address)
    try:
        return JobSubmissionClient(url)
    except ConnectionError as err:
        raise ClusterError(f"Ray cluster at {url} is not reachable ({err}); is `ray start --head` running "
                           "and the dashboard port open?") from None


def runtime_env(extra_env: dict[str, str] | None = None, overlay: dict[str, Any] | None = None) -> dict[str, Any]:
    """The project's runtime_env (``platform/runtime_env.yaml``) with local settings filled in.

    ``overlay`` (a user's runtime_env file) adds keys such as ``pip`` or ``py_executable``;
    its ``excludes`` and ``env_vars`` extend ours.
    """
    base = yaml.safe_load(RUNTIME_ENV_FILE.read_text())
    overlay = dict(overlay or {})
    env: dict[str, Any] = {**base, **overlay}
    env["working_dir"] = str((PROJECT_ROOT / env.get("working_dir", ".")).resolve())
    env["excludes"] = [*base.get("excludes", []), *overlay.get("excludes", [])]
    env["env_vars"] = {
        **job_env_vars(),
        **{key: os.environ[key] for key in PASS_THROUGH if os.environ.get(key)},
        **overlay.get("env_vars", {}),
        **(extra_env or {}),
    }
    return env


def entrypoint(command: list[str], python: str = "python") -> str:
    return shlex.join([python, "-m", "grl_aecnn.cli", *command])


def submit(client: "JobSubmissionClient", command: list[str], *, python: str = "python",
           extra_env: dict[str, str] | None = None, overlay: dict[str, Any] | None = None) -> str:
    """Send ``grl-aecnn <command>`` as a job; returns its submission id."""
    try:
        return client.submit_job(
            entrypoint=entrypoint(command, python),
            runtime_env=runtime_env(extra_env, overlay),
            metadata={METADATA_KEY: shlex.join(command)},
        )
    except RuntimeError as err:
        raise ClusterError(f"job submission failed: {err}") from None


def info(client: "JobSubmissionClient", job_id: str) -> "JobDetails":
    try:
        return client.get_job_info(job_id)
    except RuntimeError as err:
        raise ClusterError(f"job {job_id}: {err}") from None


def wait(client: "JobSubmissionClient", job_id: str, timeout_s: float | None = None,
         poll_s: float = 1.0) -> "JobStatus":
    """Block until the job reaches a terminal state (or the timeout passes); returns its status."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = info(client, job_id).status
        if status.is_terminal() or (deadline is not None and time.monotonic() > deadline):
            return status
        time.sleep(poll_s)


def follow(client: "JobSubmissionClient", job_id: str, out: TextIO | None = None) -> "JobStatus":
    """Stream the job's logs (to stdout by default) until it ends; returns its final status."""
    out = out or sys.stdout

    async def _tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(_tail())
    except RuntimeError as err:  # the log stream closed early (head restarted, network)
        print(f"grl-aecnn: log stream of {job_id} ended early ({err})", file=sys.stderr)
    return wait(client, job_id)


def list_jobs(client: "JobSubmissionClient") -> list["JobDetails"]:
    """All jobs the cluster knows, newest first."""
    return sorted(client.list_jobs(), key=lambda job: job.start_time or 0, reverse=True)


def describe(job: "JobDetails") -> str:
    """One line per job: id, status, start time, command."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) if job.start_time else "-"
    command = (job.metadata or {}).get(METADATA_KEY) or job.entrypoint
    return f"{job.submission_id or job.job_id}  {job.status!s:9}  {started}  {command}"


def project_relative(path: Path) -> str:
    """``path`` relative to the shipped project, so the job finds it in its working_dir."""
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        raise ConfigError(
            f"{path} is outside the project {PROJECT_ROOT}, so a job cannot see it; "
            "copy it into tune_configs/ (it ships with the job)"
        ) from None
