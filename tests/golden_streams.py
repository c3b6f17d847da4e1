"""Version-1 bitstreams from a fixed seed, one per codec and header variant, pinned as
tests/fixtures/bitstream_v1_<name>.bin. test_golden.py checks that today's encoder writes
the same bytes and today's decoder reads them back.

Regenerate (only on a deliberate format change, with a VERSION bump in bitstream.py):

    PYTHONPATH=. python tests/golden_streams.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from grl_aecnn.codecs.aecnn import AECNNCodec
from grl_aecnn.codecs.bitstream import VERSION, Header, pack
from grl_aecnn.codecs.bottlenetpp import BITS, BottleNetPPCodec
from grl_aecnn.codecs.entropy import pack_raw

FIXTURES = Path(__file__).parent / "fixtures"
SHAPE = (64, 8, 8)
BOTTLENET_CHANNELS = 2


def path_of(name: str) -> Path:
    return FIXTURES / f"bitstream_v{VERSION}_{name}.bin"


def split_tensors(seed: int, n: int) -> np.ndarray:
    """Non-negative [n, C, H, W] activations, like those after a ReLU."""
    return np.maximum(np.random.default_rng(seed).normal(size=(n, *SHAPE)), 0).astype(np.float32)


def aecnn_codec(channels: tuple[int, ...], bits: int, scales: str) -> AECNNCodec:
    codec = AECNNCodec(SHAPE, channels, bits, width=4, scales=scales)
    train = torch.from_numpy(split_tensors(0, 64))
    codec.calibrate(train)
    codec.fit_symbols(train)
    return codec


def bottlenet_codec() -> tuple[BottleNetPPCodec, np.ndarray]:
    """A BottleNet++ codec (only its symbol model and shapes matter to the stream) and one
    sample's 8-bit code symbols, drawn from the seed rather than from its random encoder."""
    codec = BottleNetPPCodec(SHAPE, BOTTLENET_CHANNELS, width=4)
    rng = np.random.default_rng(2)
    train = rng.binomial(255, 0.3, size=(64, *codec.code_shape))
    codec.entropy.fit(train)
    return codec, rng.binomial(255, 0.3, size=codec.code_shape).astype(np.int32)


def streams() -> dict[str, bytes]:
    sample = split_tensors(1, 1)[0]
    bottlenet, symbols = bottlenet_codec()
    header = Header("bottlenetpp", bottlenet.code_shape, BITS, False, tuple(range(BOTTLENET_CHANNELS)))
    return {
        "aecnn_calibrated_list": aecnn_codec((1, 5, 9, 20), 2, "calibrated").encode(sample),
        "aecnn_per_sample_bitmask": aecnn_codec(tuple(range(0, 64, 3)), 4, "per-sample").encode(sample),
        "aecnn_all_channels": aecnn_codec(tuple(range(64)), 1, "calibrated").encode(sample),
        "bottlenetpp_raw": pack(header, pack_raw(symbols, BITS)),
        "bottlenetpp_entropy": pack(Header(**{**header.__dict__, "entropy_coded": True}),
                                    bottlenet.symbols.encode(symbols)),
    }


if __name__ == "__main__":
    for name, data in streams().items():
        path_of(name).write_bytes(data)
        print(f"{path_of(name)}: {len(data)} bytes")
