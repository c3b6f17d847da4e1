"""Every CNN family through the same codec stage and simulator: split tensors from its head,
every codec trained and measured on real bitstreams, a valid profile whose device cost counts
each codec's encoder, and simulator latencies built from it.

The sweep's own functions run here without Ray's orchestration (Tune and Ray Data, which see
only a split tensor of some shape, are covered by test_codec_sweep.py), so each family takes
seconds on digits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from data_pipelines.datasets import load_splits
from grl_aecnn.backbone.models import build_model
from grl_aecnn.backbone.split import count_flops, split_info
from grl_aecnn.codecs.measure import CodecMeasurer
from grl_aecnn.codecs.store import build_codec, load_codec, point_specs, save_codec
from grl_aecnn.codecs.sweep import _eval_snrs, _tail, build_profile, prepare_inputs
from grl_aecnn.codecs.training import train_codec
from grl_aecnn.config import load_config
from grl_aecnn.sim.core import SlotState, encode_action, slot_outcome
from grl_aecnn.sim.points import point_table

FAMILIES = [("resnet18", "layer2", (128, 4, 4)), ("mobilenet_v2", "stage2", (24, 8, 8)),
            ("efficientnet_b0", "stage1", (16, 16, 16))]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(arch, split) -> the family's config, backbone, sweep inputs, profile and codec weights,
    trained once per module."""
    done = {}

    def get(arch: str, split: str):
        if (arch, split) not in done:
            done[arch, split] = _profile(tmp_path_factory.mktemp(arch), arch, split)
        return done[arch, split]

    return get


def _profile(tmp_path, arch: str, split: str):
    cfg = load_config("tiny", [f"output_dir={tmp_path}", f"backbone.arch={arch}", f"codecs.split={split}",
                               "codecs.train_samples=64", "codecs.val_samples=16", "codecs.test_samples=16",
                               "codecs.batch_size=32", "codecs.aecnn.bits=[2]", "codecs.aecnn.decoder_width=8",
                               "codecs.bottlenetpp.width=8", "codecs.deepjscc.width=8"])
    torch.manual_seed(0)
    splits = load_splits(cfg.data)
    model = build_model(arch, splits.num_classes).eval()
    meta = {"arch": arch, "num_classes": splits.num_classes, "dataset": splits.name, "input_size": 32}
    inputs = prepare_inputs(cfg, model, meta, splits, cfg.stage_dir("codecs"))
    t = inputs.tensors
    blobs = {}
    specs = point_specs(cfg.codecs, inputs.importance, inputs.shape[0])
    for spec in specs:
        codec, tail = build_codec(spec, inputs.shape), _tail(inputs)
        trained = train_codec(codec, tail, t["train_z"], t["train_y"], cfg.codecs, 0, lambda *_: None,
                              t.get("train_teacher"))
        blobs[spec["id"]] = save_codec(codec, spec, inputs.shape, tail, trained)
    frame = _measure(cfg, inputs, blobs, np.ones(len(t["test_y"]), dtype=bool))
    return cfg, model, inputs, build_profile(inputs, model, frame, specs, blobs), blobs


def _measure(cfg, inputs, blobs: dict[str, bytes], stream: np.ndarray) -> pd.DataFrame:
    """The measurement rows of every test image, those in `stream` coded through real bitstreams."""
    t = inputs.tensors
    measurer = CodecMeasurer({"arch": inputs.arch, "num_classes": inputs.num_classes, "split": inputs.split,
                              "state": inputs.state}, list(blobs.values()), _eval_snrs(cfg.codecs))
    return pd.DataFrame(measurer({"tensor": t["test_z"][:].numpy(), "label": t["test_y"].numpy(),
                                  "index": np.arange(len(stream)), "stream": stream}))


@pytest.mark.parametrize(("arch", "split", "shape"), FAMILIES)
def test_family_runs_through_codecs_profile_and_simulator(trained, arch: str, split: str, shape: tuple):
    cfg, model, inputs, profile, blobs = trained(arch, split)
    info = split_info(model, split, 32)
    assert inputs.shape == shape == profile.backbone.split_shape and profile.backbone.arch == arch
    assert profile.backbone.total_flops == pytest.approx(count_flops(model, torch.zeros(1, 3, 32, 32)))
    points = {p.id: p for p in profile.points}
    assert set(points) == {"local", "raw-image", "float32", "aecnn-k2-b2", "bottlenetpp-c2", "deepjscc-c2"}
    assert points["float32"].payload_bytes == 4 * np.prod(shape)

    # device cost: the head plus each codec's own encoder network, counted the same way for every family
    for point in profile.points:
        if point.codec in ("aecnn", "bottlenetpp", "deepjscc"):
            codec, _ = load_codec(blobs[point.id], _tail(inputs))
            encoder, decoder = codec.flops()
            assert point.device_flops == pytest.approx(info.head_flops + encoder)
            assert point.server_flops == pytest.approx(decoder + info.tail_flops)
            assert point.encode_ms > 0 and point.payload_bytes != 0
    assert points["aecnn-k2-b2"].device_flops == pytest.approx(info.head_flops)  # selection + quantiser: no MACs
    assert points["bottlenetpp-c2"].device_flops > info.head_flops
    assert points["deepjscc-c2"].device_flops > info.head_flops
    assert points["aecnn-k2-b2"].payload_bytes < points["float32"].payload_bytes / 20

    # the simulator reads the profile as is; the measured encode time counts when asked for
    pts = point_table(profile, ["aecnn", "bottlenetpp", "deepjscc"])
    state = SlotState(gain=np.full((1, 1, 1), 1e-6), capacity=np.full((1, 1), 1e10),
                      device_flops=np.full((1, 1), 1e9), deadline=np.full((1, 1), 1.0),
                      task=np.ones((1, 1), bool), distance=np.full((1, 1, 1), 10.0))
    latency = {}
    for scale in (0.0, 1.0):
        sc = cfg.scenario.model_copy(update={"encode_time_scale": scale, "num_devices": 1, "num_servers": 1})
        actions = [np.array([[encode_action(0, v, pts.num)]]) for v in range(pts.num)]
        latency[scale] = np.array([slot_outcome(sc, pts, state, a).latency[0, 0] for a in actions])
    assert np.isfinite(latency[0.0]).all()
    assert latency[1.0] - latency[0.0] == pytest.approx(pts.encode_s, rel=1e-6)


def test_images_off_the_stream_subset_score_as_their_bitstreams(trained):
    """The images not coded to bytes take the export's symbol path: every prediction equals the
    one from decoding its real stream, and only the streamed images count bytes and times."""
    cfg, model, inputs, _, blobs = trained("resnet18", "layer2")
    n = len(inputs.tensors["test_y"])
    streamed = _measure(cfg, inputs, blobs, np.ones(n, dtype=bool))
    half = np.arange(n) % 2 == 0
    mixed = _measure(cfg, inputs, blobs, half)
    assert (mixed.correct.to_numpy() == streamed.correct.to_numpy()).all()
    digital = mixed.point.str.startswith(("aecnn", "bottlenetpp")).to_numpy()
    on_stream = np.tile(half, len(mixed) // n)
    assert mixed.payload_bytes[digital & on_stream].gt(0).all()
    assert mixed.payload_bytes[digital & ~on_stream].isna().all() and mixed.encode_ms[digital & ~on_stream].isna().all()

    specs = point_specs(cfg.codecs, inputs.importance, inputs.shape[0])
    profile = {p.id: p for p in build_profile(inputs, model, mixed, specs, blobs).points}
    aecnn = mixed[mixed.point == "aecnn-k2-b2"]
    assert profile["aecnn-k2-b2"].payload_bytes == pytest.approx(aecnn.payload_bytes[half].mean())
    assert profile["aecnn-k2-b2"].accuracy == pytest.approx(aecnn.correct.mean())
    clean = mixed[mixed.point == "clean"].correct.to_numpy(float)
    drop = clean - aecnn.correct.to_numpy(float)
    assert profile["aecnn-k2-b2"].drop_ci95 == pytest.approx(1.96 * drop.std(ddof=1) / np.sqrt(n))
