"""Process set-up shared by every entry point: sane defaults for Ray and torch on small machines."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grl_aecnn.config import ExperimentConfig

# Defaults that make a local Ray safe and quiet; a user's own setting always wins.
RAY_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # Bind a local Ray to 127.0.0.1 instead of the machine's network address.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # A local single-user cluster needs no token; clusters set RAY_AUTH_MODE themselves.
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_DEDUP_LOGS": "1",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "PYTHONWARNINGS": "ignore::DeprecationWarning",
}


# Settings the cluster decides when it starts (`ray start`): a job or a job's driver that
# overrode them could no longer talk to its own cluster (token auth, node IP).
CLUSTER_OWNED = ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


def configure_process() -> None:
    """Set environment defaults before Ray or torch start (idempotent)."""
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ  # set by Ray for a job's driver
    for key, value in RAY_ENV_DEFAULTS.items():
        if not (in_job and key in CLUSTER_OWNED):
            os.environ.setdefault(key, value)
    # One intra-op thread per process: Ray runs one process per CPU, and oversubscribing
    # two cores makes small torch ops 100x slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # torch reads OMP_NUM_THREADS when imported; only an already imported torch needs telling
    # (importing it here would slow every command, `config show` and `jobs` included).
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _reread_ray_bind_setting() -> None:
    """Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when first imported: a script that
    imported Ray before this package would start it on every interface. Read it again."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR,
                                                              not ray_constants.IS_WINDOWS_OR_OSX)


def init_ray(cfg: "ExperimentConfig | None" = None) -> None:
    """Connect to the configured cluster, or start a local Ray sized for this machine."""
    import ray

    configure_process()
    if ray.is_initialized():
        return
    address = (cfg.ray.address if cfg else None) or os.environ.get("RAY_ADDRESS")
    if address and not address.startswith(("http://", "https://")):  # a dashboard URL is for jobs only
        ray.init(address=address, log_to_driver=True)
        return
    # A dashboard URL in RAY_ADDRESS is for job submission; ray.init would misread it.
    # "local" starts a new Ray even when another one runs on this machine (Ray would otherwise
    # join the one named in its ray_current_cluster file, perhaps another user's).
    # The dashboard (on loopback) also serves the state API that Ray Train polls.
    kwargs: dict = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "log_to_driver": True,
                    "address": "local"}
    _reread_ray_bind_setting()
    if cfg is not None:
        if cfg.ray.num_cpus:
            kwargs["num_cpus"] = cfg.ray.num_cpus
        if cfg.ray.object_store_memory_mb:
            kwargs["object_store_memory"] = cfg.ray.object_store_memory_mb * 1024 * 1024
    ray.init(**kwargs)
