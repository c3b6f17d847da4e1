"""Golden files: the version-1 bitstream of each codec (tests/golden_streams.py made them from a
fixed seed) and the small codec profile the simulator tests run on. A format change fails here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from golden_streams import (SHAPE, aecnn_codec, bottlenet_codec, path_of, split_tensors,
                            streams)
from grl_aecnn.codecs.bitstream import ALL, BITMASK, INDEX_LIST, MAGIC, VERSION, unpack
from grl_aecnn.profile import PROFILE_VERSION, load_profile

STREAMS = streams()
SAMPLE = split_tensors(1, 1)[0]


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_encoder_writes_the_pinned_bytes(name: str) -> None:
    assert STREAMS[name] == path_of(name).read_bytes()


@pytest.mark.parametrize(("name", "flags", "chan_bytes"), [
    ("aecnn_calibrated_list", (2 - 1) | 0x10 | INDEX_LIST << 5, bytes([4, 1, 5, 9, 20])),
    ("aecnn_per_sample_bitmask", (4 - 1) | 0x10 | BITMASK << 5 | 0x80, None),
    ("aecnn_all_channels", (1 - 1) | 0x10 | ALL << 5, b""),
    ("bottlenetpp_raw", 8 - 1, b""),
    ("bottlenetpp_entropy", (8 - 1) | 0x10, b""),
])
def test_header_layout(name: str, flags: int, chan_bytes: bytes | None) -> None:
    data = path_of(name).read_bytes()
    codec_id = 2 if name.startswith("bottlenet") else 1
    assert data[:3] == bytes([MAGIC, VERSION << 5 | codec_id, flags])
    dims = bytes([2, 4, 4]) if codec_id == 2 else bytes([64, 8, 8])
    assert data[3:6] == dims
    if chan_bytes is not None:
        assert data[6:6 + len(chan_bytes)] == chan_bytes


def test_aecnn_golden_streams_decode_to_the_quantised_sample() -> None:
    for name, channels, bits, scales in [("aecnn_calibrated_list", (1, 5, 9, 20), 2, "calibrated"),
                                         ("aecnn_per_sample_bitmask", tuple(range(0, 64, 3)), 4, "per-sample"),
                                         ("aecnn_all_channels", tuple(range(64)), 1, "calibrated")]:
        codec = aecnn_codec(channels, bits, scales)
        decoded = codec.decode(path_of(name).read_bytes())
        assert decoded.shape == (len(channels), *SHAPE[1:])
        assert np.array_equal(decoded, codec.dequantized(SAMPLE)), name


def test_bottlenet_golden_streams_decode_to_the_symbols() -> None:
    codec, symbols = bottlenet_codec()
    for name in ("bottlenetpp_raw", "bottlenetpp_entropy"):
        header, _ = unpack(path_of(name).read_bytes())
        assert header.entropy_coded == name.endswith("entropy")
        assert np.array_equal(codec.decode(path_of(name).read_bytes()), symbols.astype(np.float32) / 255), name


PROFILE = Path(__file__).parent / "fixtures" / "profile_small.json"


def test_small_profile_validates_and_keeps_its_points() -> None:
    profile = load_profile(PROFILE)
    assert profile.version == PROFILE_VERSION
    assert profile.backbone.split_shape == (64, 8, 8)
    counts = {c: sum(p.codec == c for p in profile.points) for c in sorted({p.codec for p in profile.points})}
    assert counts == {"aecnn": 15, "bottlenetpp": 8, "deepjscc": 4, "float32": 1, "local": 1, "raw-image": 1}
    assert [p.id for p in profile.select(["aecnn"])][:4] == ["aecnn-k1-b2", "aecnn-k1-b4", "aecnn-k2-b2", "aecnn-k2-b4"]
    assert profile.local_point().server_flops == 0 and profile.backbone.total_flops == 74033152.0
