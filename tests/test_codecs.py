"""Codecs on real ResNet-18 tails: quantiser bounds, exact round trips, importance-ranked
pruning, training steps, weights files, and profile validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from grl_aecnn.backbone.models import build_model
from grl_aecnn.backbone.split import split_resnet
from grl_aecnn.codecs import quantize as q
from grl_aecnn.codecs.aecnn import AECNNCodec, top_channels
from grl_aecnn.codecs.bottlenetpp import BottleNetPPCodec
from grl_aecnn.codecs.deepjscc import DeepJSCCCodec, power_normalize
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.codecs.store import build_codec, load_codec, point_specs, save_codec
from grl_aecnn.codecs.training import accuracy, task_loss, train_attention, train_codec
from grl_aecnn.profile import CodecProfile, ProfileError, load_profile

SHAPE = (64, 8, 8)


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    head, tail = split_resnet(model, "stem")
    with torch.no_grad():
        z = head(torch.randn(48, 3, 32, 32))
    return tail, z, torch.randint(0, 10, (48,))


def test_per_sample_quantiser_never_clips_and_errs_at_most_half_a_step():
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(4, 8, 8)) * 3, 0).astype(np.float32)
    for bits in (1, 2, 4, 8):
        scales = q.code_scales(q.scale_codes(x))
        assert np.all(scales >= x.reshape(4, -1).max(1))
        step = scales / q.levels(bits)
        err = np.abs(q.dequantize(q.quantize(x, scales, bits), scales, bits) - x)
        assert np.all(err <= step[:, None, None] / 2 + 1e-6)
        fake = q.fake_quantize(torch.from_numpy(x)[None], bits)[0].numpy()
        assert np.allclose(fake, q.dequantize(q.quantize(x, scales, bits), scales, bits), atol=1e-6)


def test_calibrated_quantiser_clips_at_the_percentile():
    rng = np.random.default_rng(1)
    train = np.maximum(rng.normal(size=(200, 3, 4, 4)) * [[[[1.0]], [[2.0]], [[4.0]]]], 0).astype(np.float32)
    scales = q.calibrate(train, 99.0)
    assert np.allclose(scales, np.percentile(np.moveaxis(train, 1, 0).reshape(3, -1), 99.0, axis=1))
    x = train[0] * 3
    syms = q.quantize(x, scales, 2)
    inside = x <= scales[:, None, None]
    assert np.all(syms[~inside] == 3) and syms.max() <= 3
    err = np.abs(q.dequantize(syms, scales, 2) - x)
    assert np.all(err[inside] <= (scales / 3 / 2 + 1e-6)[:, None, None].repeat(4, 1).repeat(4, 2)[inside])
    fake = q.fake_quantize(torch.from_numpy(x)[None], 2, torch.from_numpy(scales))[0].numpy()
    assert np.allclose(fake, q.dequantize(syms, scales, 2), atol=1e-6)


def test_task_loss_mixes_cross_entropy_and_distillation():
    torch.manual_seed(0)
    logits, teacher, labels = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    ce = torch.nn.functional.cross_entropy(logits, labels)
    assert torch.isclose(task_loss(logits, teacher, labels, CodecsConfig(distillation=0.0)), ce)
    pure_kd = CodecsConfig(distillation=1.0, distill_temperature=2.0)
    assert task_loss(teacher, teacher, labels, pure_kd).abs() < 1e-6  # matching the teacher costs nothing
    assert task_loss(logits, teacher, labels, pure_kd) > 0.01
    half = task_loss(logits, teacher, labels, CodecsConfig(distillation=0.5))
    assert torch.isclose(half, 0.5 * ce + 0.5 * task_loss(logits, teacher, labels, pure_kd))


def test_pruned_channels_follow_the_importance_ranking():
    importance = np.array([0.1, 0.9, 0.3, 0.8, 0.5, 0.5])
    assert top_channels(importance, 1) == (1,)
    assert top_channels(importance, 3) == (1, 3, 4)
    specs = point_specs(CodecsConfig(train=["aecnn"], aecnn={"kept_channels": [2, 4], "bits": [2]}),
                        importance, 6)
    assert [s["channels"] for s in specs] == [[1, 3], [1, 3, 4, 5]]


def test_aecnn_trains_round_trips_and_reloads(data):
    tail, z, y = data
    cfg = CodecsConfig(batch_size=16, tail_finetune="first")
    importance = train_attention(tail, z, y, cfg, seed=0)
    assert importance.shape == (64,) and len(np.unique(importance)) == 64  # a ranking without ties
    sparse = cfg.model_copy(update={"aecnn": cfg.aecnn.model_copy(update={"attention_sparsity": 10.0})})
    assert train_attention(tail, z, y, sparse, seed=0).mean() < importance.mean()  # the L1 term pulls weights down
    channels = top_channels(importance, 4)
    codec = AECNNCodec(SHAPE, channels, bits=2, width=8)
    trained = train_codec(codec, tail, z, y, cfg, seed=0, log=lambda step, m: None)
    assert trained == ["0"] and codec.symbols is not None
    sample = z[0].numpy()
    stream = codec.encode(sample)
    assert np.array_equal(codec.decode(stream), codec.dequantized(sample))
    # the weights file rebuilds the same codec and the same fine-tuned tail
    spec = {"codec": "aecnn", "id": "a", "kept_channels": 4, "bits": 2, "channels": list(channels), "width": 8,
            "scales": "calibrated", "clip_percentile": 99.5, "grid": 8}
    blob = save_codec(codec, spec, SHAPE, tail, trained)
    fresh_tail = split_resnet(build_model("resnet18", 10).eval(), "stem")[1]
    loaded, spec = load_codec(blob, fresh_tail)
    assert spec["id"] == "a" and loaded.encode(sample) == stream
    assert accuracy(loaded, fresh_tail, z, y) == accuracy(codec, tail, z, y)


def test_decoder_starts_from_the_least_squares_prediction(data):
    """Before any training the decoder is the closed-form linear prediction of all channels from
    the kept ones: closer to the split tensor than filling the pruned channels with their means,
    and a stationary point of its MSE (no gradient on the linear weights)."""
    _, z, _ = data
    codec = AECNNCodec(SHAPE, (0, 1, 2, 3), bits=8, width=8)
    codec.calibrate(z)
    mean_fill = AECNNCodec(SHAPE, (0, 1, 2, 3), bits=8, recovery="mean")
    mean_fill.calibrate(z)
    with torch.no_grad():
        assert torch.mean((codec(z) - z) ** 2) < 0.95 * torch.mean((mean_fill(z) - z) ** 2)
    x = q.fake_quantize(z[:, :4], 8, codec.scales)
    rec = codec.recovery
    loss = torch.mean((rec._placed(x) + rec.linear(x) - z) ** 2)
    grad = torch.autograd.grad(loss, rec.linear.weight)[0]
    assert grad.abs().max() < 1e-3 * rec.linear.weight.abs().max()


def test_context_coded_aecnn_streams_are_smaller_and_reload(data):
    tail, z, _ = data
    spec = {"codec": "aecnn", "id": "c", "kept_channels": 4, "bits": 2, "channels": [0, 1, 2, 3], "width": 8,
            "scales": "calibrated", "clip_percentile": 95.0, "grid": 8}
    sizes = {}
    for context in (False, True):
        codec = build_codec({**spec, "context": context}, SHAPE)
        codec.calibrate(z)
        codec.fit_symbols(z)
        streams = [codec.encode(x) for x in z.numpy()]
        assert all(np.array_equal(codec.decode(s), codec.dequantized(x)) for s, x in zip(streams, z.numpy()))
        sizes[context] = np.mean([len(s) for s in streams])
    loaded, got = load_codec(save_codec(codec, {**spec, "context": True}, SHAPE, tail, []), tail)
    assert got["context"] and loaded.encode(z[0].numpy()) == streams[0]
    assert sizes[True] < sizes[False]


def test_schedule_runs_only_the_steps_asked_for(data):
    """A feature-only schedule trains the codec on MSE alone: the tail is never changed, no task
    metrics are logged; a fractional epoch count trains on that share of the samples."""
    from grl_aecnn.codecs.training import _batches

    tail, z, y = data
    before = {k: v.clone() for k, v in tail.state_dict().items()}
    cfg = CodecsConfig(batch_size=16, tail_finetune="first", schedule={"feature": 0.5, "codec": 0, "joint": 0})
    codec = AECNNCodec(SHAPE, (0, 1, 2, 3), bits=2, width=8)
    logs: list = []
    trained = train_codec(codec, tail, z, y, cfg, 0, lambda step, m: logs.append((step, m)))
    assert trained == [] and [step for step, _ in logs] == ["feature"] and set(logs[0][1]) == {"feature_mse"}
    assert all(torch.equal(before[k], v) for k, v in tail.state_dict().items())
    half = torch.cat(_batches(48, 16, 0.5, seed=0))
    assert len(half) == 24 and len(set(half.tolist())) == 24
    more = torch.cat(_batches(48, 16, 1.5, seed=0))
    assert len(more) == 72 and set(more.tolist()) == set(range(48))


def test_bottlenetpp_both_variants_round_trip(data):
    tail, z, y = data
    codec = BottleNetPPCodec(SHAPE, channels=2, stride=2, width=8)
    train_codec(codec, tail, z, y, CodecsConfig(batch_size=16, tail_finetune="none"), 0, lambda s, m: None)
    sample = z[1].numpy()
    expected = codec.code_symbols(z[1:2])[0].astype(np.float32) / 255
    raw, coded = codec.encode(sample, entropy_coded=False), codec.encode(sample, entropy_coded=True)
    assert np.array_equal(codec.decode(raw), expected) and np.array_equal(codec.decode(coded), expected)
    assert len(raw) == 2 * 4 * 4 + 8  # 8-bit values + header (3 + 3 dims + CRC-16)
    assert codec.restore(torch.from_numpy(expected)[None]).shape == (1, *SHAPE)


def test_deepjscc_power_and_channel_uses(data):
    tail, z, y = data
    codec = DeepJSCCCodec(SHAPE, channels=2, stride=2, width=8, train_snr_db=10)
    assert codec.channel_uses == 2 * 4 * 4
    x = power_normalize(codec.encoder(z))
    power = x.flatten(1).pow(2).sum(1) / codec.channel_uses
    assert torch.allclose(power, torch.ones(len(z)), atol=1e-4)
    train_codec(codec, tail, z, y, CodecsConfig(batch_size=16, tail_finetune="none"), 0, lambda s, m: None)
    assert codec(z[:4], snr_db=20).shape == (4, *SHAPE)


def test_build_codec_rejects_unknown():
    with pytest.raises(ValueError, match="unknown codec"):
        build_codec({"codec": "jpeg"}, SHAPE)


def _profile_json() -> dict:
    from pathlib import Path

    return json.loads((Path(__file__).parent / "fixtures" / "profile_small.json").read_text())


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(version=99), "version"),
    (lambda d: d["backbone"].pop("arch"), "backbone.arch"),
    (lambda d: d["points"][0].pop("accuracy"), "points.0.accuracy"),
])
def test_profile_with_wrong_version_or_missing_field_is_rejected(tmp_path, edit, field):
    data = _profile_json()
    edit(data)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match=field.replace(".", r"\.")):
        load_profile(path)


def test_digital_point_without_payload_is_rejected(tmp_path):
    data = _profile_json()
    point = next(p for p in data["points"] if p["codec"] in ("aecnn", "bottlenetpp", "float32"))
    point.pop("payload_bytes")
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ProfileError, match="payload_bytes"):
        load_profile(path)


def _load_written(data: dict, folder) -> CodecProfile:
    path = folder / "profile.json"
    path.write_text(json.dumps(data))
    return load_profile(path)


def test_seed_results_round_trip_and_a_negative_interval_is_rejected(tmp_path):
    """Profiles with per-seed results load and save unchanged; older ones (the fixture) have none."""
    data = _profile_json()
    index, point = next((i, p) for i, p in enumerate(data["points"]) if p["codec"] == "aecnn")
    assert "seeds" not in point and _load_written(data, tmp_path).points[index].seeds is None
    point.update(accuracy_ci95=0.02, seeds=[{"seed": 0, "accuracy": 0.81, "payload_bytes": 40.0},
                                            {"seed": 1, "accuracy": 0.79, "payload_bytes": 42.0}])
    profile = _load_written(data, tmp_path)
    assert [s.accuracy for s in profile.points[index].seeds] == [0.81, 0.79]
    assert load_profile(profile.save(tmp_path / "again.json")) == profile
    point["accuracy_ci95"] = -0.1
    with pytest.raises(ProfileError, match=rf"points\.{index}\.accuracy_ci95"):
        _load_written(data, tmp_path)
