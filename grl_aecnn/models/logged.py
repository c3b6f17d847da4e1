"""Log the backbone, codec points and GRL policies as MLflow Models and register them.

Each model is a pyfunc whose ``loader_module`` is ``grl_aecnn.models.pyfunc`` and whose data
folder holds safetensors + JSON only (see there), with a signature and an input example.
Every model is registered as ``<config name>.<part>`` (``tiny.backbone``,
``tiny.codec.aecnn-k2-b4``, ``tiny.grl-aecnn``); the version carries its measured figures
as tags. The evaluation calls ``set_champions``: per GRL policy (one codec set each) the
alias ``champion`` points at the version with the best evaluation reward so far.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from grl_aecnn.models.pyfunc import CODEC_FILE, MODEL_JSON, POLICY_DIR, _load_pyfunc

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo

    from grl_aecnn.config import ExperimentConfig
    from grl_aecnn.policies.registry import PolicySpec
    from grl_aecnn.profile import CodecProfile, OperatingPoint

LOADER = "grl_aecnn.models.pyfunc"
CHAMPION = "champion"
CHAMPION_METRIC = "reward"
KIND_KEY = "grl_aecnn.kind"
REQUIREMENTS = ("torch", "torchvision", "numpy", "safetensors", "pydantic")


def registered_name(cfg: "ExperimentConfig", part: str) -> str:
    return f"{cfg.name}.{part}"


def log_model(kind: str, files: Mapping[str, Path], example: Any, name: str, register_as: str,
              figures: Mapping[str, Any]) -> "ModelInfo":
    """Log one pyfunc model on the active run and register it; ``figures`` become version tags.

    ``files`` maps a file name in the data folder to its source (a file or a folder). The
    output schema comes from running the model on ``example`` here, through the same loader
    MLflow uses, so a model that cannot load or predict is never logged.
    """
    tags = {k: str(v) for k, v in figures.items()}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        (data / MODEL_JSON).write_text(json.dumps({"kind": kind}))
        for target, source in files.items():
            (shutil.copytree if Path(source).is_dir() else shutil.copyfile)(source, data / target)
        output = _load_pyfunc(str(data)).predict(example)
        info = mlflow.pyfunc.log_model(
            name=name, loader_module=LOADER, data_path=str(data), signature=infer_signature(example, output),
            input_example=example, pip_requirements=[f"{p}=={version(p)}" for p in REQUIREMENTS],
            metadata={KIND_KEY: kind}, tags=tags, registered_model_name=register_as, await_registration_for=0)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(register_as, info.registered_model_version, key, value)
    return info


def log_backbone_model(cfg: "ExperimentConfig", folder: Path, meta: Mapping[str, Any]) -> "ModelInfo":
    """The trained backbone (``model.safetensors`` + ``meta.json`` of the stage folder): image -> class."""
    from grl_aecnn.backbone.io import META_FILE, MODEL_FILE

    size = int(meta["input_size"])
    example = np.zeros((1, 3, size, size), dtype=np.float32)
    figures = {k: meta[k] for k in ("arch", "dataset", "num_classes", "test_accuracy", "val_accuracy") if k in meta}
    return log_model("backbone", {MODEL_FILE: folder / MODEL_FILE, META_FILE: folder / META_FILE}, example,
                     "backbone", registered_name(cfg, "backbone"), figures)


def codec_figures(point: "OperatingPoint") -> dict[str, Any]:
    """The profile's measured figures of one operating point, without empty fields."""
    keep = ("codec", "split", "payload_bytes", "channel_uses", "compression_ratio", "accuracy", "device_flops",
            "server_flops", "encode_ms", "decode_ms")
    return {k: v for k in keep if (v := getattr(point, k)) is not None}


def log_codec_models(cfg: "ExperimentConfig", profile: "CodecProfile", weights: Mapping[str, Path],
                     example: np.ndarray) -> dict[str, "ModelInfo"]:
    """Every trained codec point (its weights file): split tensor -> bytes -> recovered tensor.

    ``weights``: point id -> codec weights file; ``example``: a few real split tensors.
    BottleNet++ points appear in the profile once per variant; the model's tags take the
    entropy-coded one, the variant the model serves.
    """
    by_id = {p.id: p for p in profile.points}
    out = {}
    for point_id, path in weights.items():
        point = by_id.get(f"{point_id}-ec", by_id.get(point_id))
        figures = codec_figures(point) if point else {}
        out[point_id] = log_model("codec", {CODEC_FILE: path}, np.ascontiguousarray(example, np.float32),
                                  f"codec-{point_id}", registered_name(cfg, f"codec.{point_id}"), figures)
    return out


def log_policy_model(cfg: "ExperimentConfig", name: str, folder: Path, example: dict[str, np.ndarray],
                     figures: Mapping[str, Any]) -> "ModelInfo":
    """One exported GRL policy folder: observation batch -> actions."""
    return log_model("policy", {POLICY_DIR: folder}, example, f"policy-{name}", registered_name(cfg, name), figures)


def set_champions(trained: Iterable["PolicySpec"], default: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """Tag each registered policy version with its evaluation figures and move ``champion`` to it
    when its ``reward`` beats the current champion's (or there is none). Returns name -> version
    of the champions set now. ``default``: the evaluation's default-scenario table."""
    client = MlflowClient()
    moved = {}
    for spec in trained:
        if not spec.model or spec.name not in default:
            continue
        model_name, model_version = parse_version_uri(spec.model)
        figures = default[spec.name]
        for key, value in figures.items():
            client.set_model_version_tag(model_name, model_version, f"eval.{key}", str(value))
        current = _champion(client, model_name)
        best = None if current is None else current.tags.get(f"eval.{CHAMPION_METRIC}")
        if best is None or float(figures[CHAMPION_METRIC]) > float(best) or str(current.version) == model_version:
            client.set_registered_model_alias(model_name, CHAMPION, model_version)
            moved[model_name] = model_version
    return moved


def _champion(client: MlflowClient, name: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        return None


def version_uri(name: str, model_version: str | int) -> str:
    return f"models:/{name}/{model_version}"


def parse_version_uri(uri: str) -> tuple[str, str]:
    """``models:/<name>/<version>`` -> (name, version)."""
    name, _, model_version = uri.removeprefix("models:/").rpartition("/")
    if not name or not model_version.isdigit():
        raise ValueError(f"{uri!r} is not a registered model version URI (models:/<name>/<version>)")
    return name, model_version
