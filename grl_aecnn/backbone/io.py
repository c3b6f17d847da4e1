"""Read and write the backbone stage's outputs: ``model.safetensors`` + ``meta.json``.

Weights are safetensors (no pickle), so loading a file from an untrusted run dir cannot
execute code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from grl_aecnn.backbone.models import build_model

if TYPE_CHECKING:
    from grl_aecnn.config import ExperimentConfig

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
META_KEYS = ("arch", "num_classes", "class_names", "input_size", "dataset")


class BackboneNotFound(FileNotFoundError):
    """No trained backbone in the stage folder, or its files are unreadable or inconsistent."""


def save_backbone(folder: Path, model: nn.Module, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Write weights and metadata; the metadata is written last, so its presence marks a complete save."""
    folder.mkdir(parents=True, exist_ok=True)
    model_path, meta_path = folder / MODEL_FILE, folder / META_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(model_path))
    meta_path.write_text(json.dumps(meta, indent=2))
    return model_path, meta_path


def load_backbone_dir(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model (eval mode) and metadata saved in ``folder``."""
    model_path, meta_path = folder / MODEL_FILE, folder / META_FILE
    hint = "train it first: `grl-aecnn train-backbone` (or `grl-aecnn run`)"
    if not model_path.exists() or not meta_path.exists():
        raise BackboneNotFound(f"no trained backbone in {folder} ({MODEL_FILE} and {META_FILE} expected); {hint}")
    try:
        meta = json.loads(meta_path.read_text())
        missing = [k for k in META_KEYS if k not in meta]
        if missing:
            raise ValueError(f"missing keys {missing}")
        model = build_model(meta["arch"], int(meta["num_classes"]))
        model.load_state_dict(load_file(str(model_path)))
    except (SafetensorError, ValueError, RuntimeError, OSError) as err:
        raise BackboneNotFound(f"corrupt backbone checkpoint in {folder}: {err}; {hint} again") from None
    return model.eval(), meta


def load_trained_backbone(cfg: "ExperimentConfig") -> tuple[nn.Module, dict[str, Any]]:
    """The backbone trained by this config's backbone stage, in eval mode, with its metadata."""
    return load_backbone_dir(cfg.run_dir / "backbone")
