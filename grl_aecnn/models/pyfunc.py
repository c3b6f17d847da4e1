"""MLflow's pyfunc loader for the project's models (``loader_module`` of every logged model).

A logged model's data folder holds ``model.json`` (``{"kind": ...}``) and the kind's own
files, all safetensors + JSON: nothing is unpickled, and loading runs only this package's
code. ``mlflow.pyfunc.load_model`` calls ``_load_pyfunc`` here; nothing imports Ray.

- ``backbone``: images ``(B, 3, S, S)`` float32, normalised as in training -> class ``(B,)``;
- ``codec``: split tensors ``(B, C, H, W)`` -> through the real bitstream (digital codecs:
  encode to bytes, decode) or the AWGN channel at the training SNR (DeepJSCC, seeded) ->
  the recovered split tensors the server's tail reads;
- ``policy``: one observation batch (a dict of the simulator's arrays with a leading batch
  axis) -> actions ``(B, N_max)`` int64, the trained policy's greedy choice.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

MODEL_JSON = "model.json"
POLICY_DIR, CODEC_FILE = "policy", "codec.safetensors"  # inside the data folder
KINDS = ("backbone", "codec", "policy")


class BackboneModel:
    def __init__(self, folder: Path) -> None:
        from grl_aecnn.backbone.io import load_backbone_dir

        self.model, self.meta = load_backbone_dir(folder)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.as_tensor(np.asarray(model_input, dtype=np.float32))).argmax(1).numpy()


class CodecModel:
    def __init__(self, folder: Path) -> None:
        from grl_aecnn.codecs.store import load_codec

        # The tail weights a joint step trained ride in the same file; the codec alone is served here.
        self.codec, self.spec = load_codec((folder / CODEC_FILE).read_bytes(), torch.nn.Sequential())

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        z = np.asarray(model_input, dtype=np.float32)
        with torch.inference_mode():
            if self.codec.analog:
                generator = torch.Generator().manual_seed(int((params or {}).get("seed", 0)))
                snr = float((params or {}).get("snr_db", self.spec["train_snr_db"]))
                received = self.codec.transmit(torch.from_numpy(z), snr, generator)
            else:
                received = torch.from_numpy(np.stack([self.codec.decode(self.codec.encode(x)) for x in z]))
            return self.codec.restore(received).numpy()


class PolicyModel:
    def __init__(self, folder: Path) -> None:
        from grl_aecnn.models.policy_net import load_actor

        self.actor, self.meta = load_actor(folder / POLICY_DIR)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        return self.actor.act(model_input)


def _load_pyfunc(data_path: str) -> BackboneModel | CodecModel | PolicyModel:
    folder = Path(data_path)
    kind = json.loads((folder / MODEL_JSON).read_text()).get("kind")
    if kind not in KINDS:
        raise ValueError(f"{folder / MODEL_JSON}: unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    return {"backbone": BackboneModel, "codec": CodecModel, "policy": PolicyModel}[kind](folder)
