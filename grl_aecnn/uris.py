"""Inputs named by a local path, an MLflow run id, ``runs:/<run id>/<path>`` or ``models:/<name>@<alias>``
(or ``models:/<name>/<version>``).

A reference is checked against the tracking server first (the run or model version exists),
downloaded with ``mlflow.artifacts.download_artifacts`` into a temporary folder, checked again
(a model must be this project's pyfunc model of the expected kind, with a signature) and only
then moved to ``<dest>/<reference as a folder name>``: a bad input leaves nothing behind. Bad
references raise ``InputError`` (a ``ConfigError``: exit 2), an unreachable server ``TrackingUnavailable`` (exit 3).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from grl_aecnn.config import ConfigError

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
PREFIXES = ("runs:/", "models:/")


class InputError(ConfigError):
    """A path or MLflow reference that does not name what the option expects (exit 2)."""


def is_reference(value: str) -> bool:
    """True for a run id or a ``runs:/`` / ``models:/`` URI (anything else is a local path)."""
    return value.startswith(PREFIXES) or bool(RUN_ID.match(value))


def fetch(value: str, dest: Path, what: str, run_path: str, kind: str | None = None) -> Path:
    """The local copy of ``value``: a local path unchanged, a reference downloaded under ``dest``.

    ``what`` names the option in messages; ``run_path``: the artifact a bare run id stands for
    (e.g. ``profile.json``); ``kind``: the model kind a ``models:/`` reference must have
    (``grl_aecnn.models.pyfunc.KINDS``; None: models are refused). For a model the returned
    path is its data folder.
    """
    if not is_reference(value):
        return Path(value)  # read (and its faults named) by the option's own reader
    import mlflow
    from mlflow.exceptions import MlflowException

    from grl_aecnn.tracking import check_reachable, tracking_uri

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    artifact_uri = f"runs:/{value}/{run_path}" if RUN_ID.match(value) else value
    if artifact_uri.startswith("models:/") and kind is None:
        raise InputError(f"{what}: {value} is a model; this option takes a path, a run id or runs:/...")
    try:
        _check_exists(mlflow.MlflowClient(uri), artifact_uri)
    except MlflowException as err:
        raise InputError(f"{what}: {value} not found on the tracking server {uri} ({_first_line(err)})") from None
    target = dest / re.sub(r"[^A-Za-z0-9._@-]+", "_", value).strip("_")
    tmp = Path(tempfile.mkdtemp(prefix="grl-aecnn-fetch-"))
    try:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(tmp)))
        except (MlflowException, OSError) as err:
            raise InputError(f"{what}: artifact {artifact_uri} failed to download ({_first_line(err)})") from None
        located = _model_data(tmp, value, what, kind) if artifact_uri.startswith("models:/") else local
        relative = located.relative_to(tmp)
        shutil.rmtree(target, ignore_errors=True)  # a run's artifacts and a model version do not change
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target / relative


def _check_exists(client: Any, artifact_uri: str) -> None:
    """Raise MlflowException unless the run or registered model version exists."""
    if artifact_uri.startswith("runs:/"):
        client.get_run(artifact_uri.removeprefix("runs:/").split("/", 1)[0])
        return
    ref = artifact_uri.removeprefix("models:/")
    if "@" in ref:
        client.get_model_version_by_alias(*ref.split("@", 1))
        return
    name, _, version = ref.rpartition("/")
    if not name or not version.isdigit():
        raise InputError(f"{artifact_uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    client.get_model_version(name, version)


def _model_data(root: Path, value: str, what: str, kind: str) -> Path:
    """The data folder of a downloaded model, after checking it is one of ours of ``kind``."""
    from mlflow.models import Model

    from grl_aecnn.models.logged import KIND_KEY, LOADER

    if not (root / "MLmodel").is_file():
        raise InputError(f"{what}: {value} has no MLmodel file; not an MLflow Model")
    model = Model.load(str(root / "MLmodel"))
    loader = model.flavors.get("python_function", {}).get("loader_module")
    got = (model.metadata or {}).get(KIND_KEY)
    if loader != LOADER or got != kind or model.signature is None:
        raise InputError(f"{what}: {value} is not a grl-aecnn {kind} model (pyfunc loader {loader!r}, kind {got!r}, "
                         f"signature {'present' if model.signature else 'missing'})")
    return root / model.flavors["python_function"]["data"]


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def single(path: Path, pattern: str, what: str) -> Path:
    """The one file matching ``pattern`` at or below ``path`` (``path`` itself if it is a file)."""
    if path.is_file():
        return path
    if not path.exists():
        raise InputError(f"{what}: {path} not found (give a path, an MLflow run id, runs:/... or models:/...)")
    found = sorted(path.glob(f"**/{pattern}"))
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(path)) for p in found)
        raise InputError(f"{what}: {path} holds {len(found)} files matching {pattern}"
                         + (f" ({listed}); name one, e.g. runs:/<run id>/<its folder>" if found else ""))
    return found[0]


def fetch_run_config(value: str, output_dir: Path) -> Path:
    """The run folder for ``resume <MLflow run id>``: the run's ``config.yaml`` is downloaded into
    ``<output_dir>/<config name>/`` unless that folder already holds one (then it is reused)."""
    import yaml

    scratch = Path(tempfile.mkdtemp(prefix="grl-aecnn-run-"))
    try:
        config = single(fetch(value, scratch, "RUN", "config.yaml"), "config.yaml", "RUN")
        run_dir = output_dir / str(yaml.safe_load(config.read_text())["name"])
        if not (run_dir / "config.yaml").is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(config, run_dir / "config.yaml")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return run_dir.resolve()
