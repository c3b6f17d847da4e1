"""The codec interface: every registered codec implements it, restores from its state alone,
and a trial resumed from a step checkpoint trains bit for bit as an uninterrupted one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from grl_aecnn.codecs.base import AnalogCodec, Codec, DigitalCodec
from grl_aecnn.codecs.registry import CODECS
from grl_aecnn.codecs.seeds import trial_id, trial_seeds, with_seeds
from grl_aecnn.codecs.settings import CodecsConfig
from grl_aecnn.codecs.store import load_codec, point_specs, save_codec
from grl_aecnn.codecs.training import train_codec

SHAPE = (64, 8, 8)
CFG = CodecsConfig(train=list(CODECS), aecnn={"kept_channels": [3], "bits": [2], "decoder_width": 8},
                   bottlenetpp={"channels": [2], "width": 8}, deepjscc={"channels": [2], "width": 8},
                   batch_size=16, tail_finetune="first", schedule={"feature": 0.5, "codec": 0.5, "joint": 0.5})


def _specs() -> dict[str, dict]:
    return {s["codec"]: s for s in point_specs(CFG, np.arange(64.0), 64)}


@pytest.mark.parametrize("name", sorted(CODECS))
def test_codec_restores_from_its_state_alone(split_data, name):
    """Trained, saved and loaded: the same streams (entropy tables come back from the state_dict,
    nothing is refitted), the same FLOPs and profile variants."""
    tail, z, y = split_data
    spec = _specs()[name]
    torch.manual_seed(1)
    codec = CODECS[name].from_spec(spec, SHAPE)
    assert isinstance(codec, Codec) and codec.kind == name
    assert isinstance(codec, AnalogCodec if codec.analog else DigitalCodec)
    train_codec(codec, copy.deepcopy(tail), z, y, CFG, 0, lambda s, m: None)
    loaded, _ = load_codec(save_codec(codec, spec, SHAPE, tail, []), copy.deepcopy(tail))
    device, server = loaded.flops()
    assert (device, server) == codec.flops() and server > 0 and (device > 0) == (name != "aecnn")
    assert [v.id for v in loaded.variants(spec)] == [v.id for v in codec.variants(spec)]
    if codec.analog:
        gen = [torch.Generator().manual_seed(3) for _ in range(2)]
        assert torch.equal(loaded.restore(loaded.transmit(z[:4], 5.0, gen[0])),
                           codec.restore(codec.transmit(z[:4], 5.0, gen[1])))
        return
    assert torch.all(loaded.state_dict()["entropy.probs"] > 0)
    for variant in codec.variants(spec):
        stream = codec.encode(z[0].numpy(), **variant.encode)
        assert loaded.encode(z[0].numpy(), **variant.encode) == stream
        received = torch.from_numpy(loaded.decode(stream))[None]
        assert torch.equal(loaded.restore(received), codec.restore(received))


@pytest.mark.parametrize("name", ["bottlenetpp", "deepjscc"])
def test_resumed_trial_is_bit_identical_to_an_uninterrupted_one(split_data, name):
    """BottleNet++ and DeepJSCC draw channel noise from torch's RNG while training: the resumed
    trial only matches because its checkpoint carries the RNG state."""
    tail, z, y = split_data
    spec = _specs()[name]
    torch.manual_seed(1)
    whole, whole_tail = CODECS[name].from_spec(spec, SHAPE), copy.deepcopy(tail)
    saved: dict[int, tuple[bytes, torch.Tensor]] = {}

    def checkpoint(steps: int, rng: torch.Tensor) -> None:
        saved[steps] = (save_codec(whole, spec, SHAPE, whole_tail, []), rng)

    train_codec(whole, whole_tail, z, y, CFG, 7, lambda s, m: None, on_step=checkpoint)
    assert sorted(saved) == [1, 2]
    for steps, (blob, rng) in saved.items():
        resumed_tail = copy.deepcopy(tail)
        resumed, _ = load_codec(blob, resumed_tail)
        train_codec(resumed, resumed_tail, z, y, CFG, 7, lambda s, m: None, start=steps, rng_state=rng)
        for got, want in ((resumed.state_dict(), whole.state_dict()),
                          (resumed_tail.state_dict(), whole_tail.state_dict())):
            assert all(torch.equal(got[k], want[k]) for k in want), steps
    # without the saved RNG state the noise differs: the check above could fail
    blob, rng = saved[1]
    reseeded_tail = copy.deepcopy(tail)
    reseeded, _ = load_codec(blob, reseeded_tail)
    train_codec(reseeded, reseeded_tail, z, y, CFG, 7, lambda s, m: None, start=1,
                rng_state=torch.manual_seed(7).get_state())
    assert not all(torch.equal(v, whole.state_dict()[k]) for k, v in reseeded.state_dict().items())
    with pytest.raises(ValueError, match="RNG state"):
        train_codec(reseeded, reseeded_tail, z, y, CFG, 7, lambda s, m: None, start=1)


def test_trial_seeds_depend_only_on_config_seed_point_and_index():
    specs = with_seeds(point_specs(CFG, np.arange(64.0), 64), 3)
    assert [trial_id(s) for s in specs[:4]] == ["aecnn-k3-b2", "bottlenetpp-c2", "deepjscc-c2", "aecnn-k3-b2-seed1"]
    seeds = {trial_id(s): trial_seeds(0, s) for s in specs}
    assert len({v for pair in seeds.values() for v in pair}) == 2 * len(specs)  # all distinct
    assert {trial_id(s): trial_seeds(0, s) for s in reversed(specs)} == seeds  # order plays no part
    assert trial_seeds(1, specs[0]) != seeds[trial_id(specs[0])]
