"""Resume an interrupted pipeline run from the resolved config it saved in its run folder.

A run folder ``<output_dir>/<name>/`` holds ``config.yaml`` (written when the pipeline starts)
and one folder per stage; on an object store (``s3://bucket/prefix/<name>``) the same layout is
read through ``grl_aecnn.storage``. Resuming re-runs the pipeline with that config and ``resume=True``:
finished stages are reused (their ``stage.json`` hash matches) and the unfinished one continues
from its own checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

from grl_aecnn import storage
from grl_aecnn.config import ConfigError, ExperimentConfig, dump_config, load_config

RUN_CONFIG = "config.yaml"


def write_run_config(cfg: ExperimentConfig) -> Path:
    """Save the resolved config (absolute output_dir) in the run folder, before any stage starts."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    root = cfg.output_dir if storage.is_uri(cfg.output_dir) else str(cfg.run_dir.parent)
    path = cfg.run_dir / RUN_CONFIG
    path.write_text(dump_config(cfg.model_copy(update={"output_dir": root})))
    storage.push(cfg, path)
    return path


def remote_run_config(uri: str, overrides: list[str] | None = None) -> ExperimentConfig:
    """The saved config of the run at a store URI (``s3://bucket/prefix/<name>``); StoreUnavailable
    when the store cannot be used, ConfigError naming ``config.yaml`` when the run lacks it."""
    storage.check(uri)
    text = storage.read_text(storage.join(uri, RUN_CONFIG))
    if text is None:
        raise ConfigError(f"no run to resume at {uri}: {RUN_CONFIG} is missing there "
                          "(a run saves its config there when it starts)")
    root, _, name = uri.rstrip("/").rpartition("/")
    location = [f"output_dir={json.dumps(root)}", f"name={json.dumps(name)}"]
    scratch = storage.mirror_root(root) / name
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / RUN_CONFIG).write_text(text)
    return load_config(str(scratch / RUN_CONFIG), [*(overrides or []), *location])


def find_run(target: str, output_dir: str = "outputs") -> Path:
    """A run folder given as a path, or as a run name under ``output_dir``."""
    candidates = [Path(target), Path(output_dir) / target]
    for folder in candidates:
        if (folder / RUN_CONFIG).is_file():
            return folder.resolve()
    tried = ", ".join(str(folder / RUN_CONFIG) for folder in candidates)
    raise ConfigError(f"no run to resume at {target!r}: none of {tried} exists "
                      "(a run saves its config there when it starts)")


def run_config(run_dir: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The run's saved config, pointed at ``run_dir`` even if the folder was moved.

    Overrides of keys that feed a stage's hash make that stage start over; the others
    (tracking, ray) change nothing that was already computed.
    """
    # JSON strings are YAML strings: names like "2024" stay names.
    location = [f"output_dir={json.dumps(str(run_dir.parent))}", f"name={json.dumps(run_dir.name)}"]
    return load_config(str(run_dir / RUN_CONFIG), [*(overrides or []), *location])
