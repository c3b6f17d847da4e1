"""`grl-aecnn export`: ONNX files that run on onnxruntime alone and match the originals on real inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from grl_aecnn.export import export_codec, export_policy
from grl_aecnn.models.policy_net import OBS_KEYS
from model_fixtures import SCENARIO, batch, codec_blob, exported_policy, observations

RUN_ONNX = """
import json, sys
import numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
obs = np.load(sys.argv[2])
names = [i.name for i in session.get_inputs()]
actions = [session.run(None, {n: obs[n][i:i + 1] for n in names})[0][0] for i in range(len(obs[names[0]]))]
np.save(sys.argv[3], np.stack(actions))
assert not [m for m in sys.modules if m.split(".")[0] in ("grl_aecnn", "ray", "torch", "rllib_models")]
"""


def test_exported_policy_takes_the_original_actions_on_1000_simulator_observations(tmp_path: Path) -> None:
    """Traced on a 14x2 observation, the file serves every network size up to its padding (16x2)."""
    from grl_aecnn.rl.policy import load_rllib_policy

    folder = exported_policy(tmp_path)
    observed = (observations(600, seed=1) + observations(200, seed=2, scenario=SCENARIO.model_copy(update={"num_devices": 5, "num_servers": 1}))
                + observations(200, seed=3, scenario=SCENARIO.model_copy(update={"num_devices": 16})))
    entry = export_policy(folder, batch(observed[0]), tmp_path / "policy.onnx")
    assert entry["format"] == "onnx" and entry["inputs"]["device"][:2] == [1, 16]
    np.savez(tmp_path / "obs.npz", **{k: np.stack([o[k] for o in observed]).astype(np.float32) for k in OBS_KEYS})
    proc = subprocess.run([sys.executable, "-c", RUN_ONNX, str(tmp_path / "policy.onnx"), str(tmp_path / "obs.npz"),
                           str(tmp_path / "actions.npy")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    original = load_rllib_policy(folder)  # the RLModule's greedy action
    expected = np.stack([original.act(o) for o in observed])
    exported = np.load(tmp_path / "actions.npy")
    assert exported.shape == expected.shape == (1000, 16)
    assert np.array_equal(exported, expected)
    assert len(np.unique(expected[:600, :14])) >= 3  # local and offloading to both servers are compared
    assert (expected[600:800, 5:] == 0).all() and (expected[800:, 14:] > 0).any()  # padding local; all 16 decide


def test_a_loaded_policy_acts_with_the_eager_modules_logits_at_every_size(tmp_path: Path) -> None:
    """`RLlibPolicy.logits` runs a forward traced on its first observation (14x2); it equals the
    module's eager forward on 5x1 and 16x2 observations too."""
    from ray.rllib.core.columns import Columns

    from grl_aecnn.rl.policy import load_rllib_policy

    policy = load_rllib_policy(exported_policy(tmp_path))
    observed = (observations(5, seed=1) + observations(5, seed=2, scenario=SCENARIO.model_copy(update={"num_devices": 5, "num_servers": 1}))
                + observations(5, seed=3, scenario=SCENARIO.model_copy(update={"num_devices": 16})))
    for obs in observed:
        traced = policy.logits(obs)
        with torch.inference_mode():
            eager = policy.module._forward({Columns.OBS: {k: torch.as_tensor(v, dtype=torch.float32) for k, v in batch(obs).items()}})[Columns.ACTION_DIST_INPUTS]
        torch.testing.assert_close(traced, eager.view(traced.shape), rtol=1e-5, atol=1e-5)
    assert policy._traced is not None


@pytest.fixture(scope="module")
def images_and_model() -> tuple[torch.Tensor, torch.nn.Module]:
    """Real digits test images (normalised as in training) and a resnet18 backbone."""
    from data_pipelines.datasets import load_splits
    from grl_aecnn.backbone.models import build_model
    from grl_aecnn.config import DataConfig

    splits = load_splits(DataConfig(dataset="digits", input_size=32))
    images = torch.stack([splits.test[i][0] for i in range(24)])
    torch.manual_seed(0)
    return images, build_model("resnet18", 10).eval()


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("kind", ["aecnn", "bottlenetpp", "deepjscc"])
def test_exported_codec_halves_match_the_codec_on_real_images(kind: str, images_and_model, tmp_path: Path) -> None:
    from grl_aecnn.backbone.split import split_resnet
    from grl_aecnn.codecs.deepjscc import power_normalize
    from grl_aecnn.codecs.store import load_codec

    images, model = images_and_model
    head, tail = split_resnet(model, "stem")
    with torch.no_grad():
        z = head(images)
    blob = codec_blob(kind, z[:16])
    entry = export_codec(model, "stem", blob, 32, tmp_path / kind)
    assert (entry["device"]["format"], entry["server"]["format"]) == ("onnx", "onnx")
    codec, _ = load_codec(blob, tail)
    symbols = _session(tmp_path / kind / "device.onnx").run(None, {"images": images.numpy()})[0]
    logits = _session(tmp_path / kind / "server.onnx").run(None, {"symbols": symbols})[0]
    with torch.no_grad():
        if kind == "deepjscc":
            sent = power_normalize(codec.encoder(z))
            np.testing.assert_allclose(symbols, sent.numpy(), rtol=1e-4, atol=1e-5)
            expected = tail(codec.restore(sent))
        else:
            streams = [codec.encode(x) for x in z.numpy()]  # the real bitstream between the two halves
            decoded = torch.from_numpy(np.stack([codec.decode(s) for s in streams]))
            expected_symbols = (np.stack([codec.quantized(x)[1] for x in z.numpy()]) if kind == "aecnn"
                                else codec.code_symbols(z))
            assert np.array_equal(symbols, expected_symbols)
            expected = tail(codec.restore(decoded))
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-4, atol=1e-4)
    assert json.dumps(entry)  # the manifest entry is plain JSON
