"""The bitstream container (SPEC 3.2): exact round trips, and every corrupt input raises
BitstreamError (never another exception, a hang, or a large allocation)."""

from __future__ import annotations

import binascii

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from grl_aecnn.codecs.aecnn import AECNNCodec
from grl_aecnn.codecs.bitstream import MAGIC, VERSION, BitstreamError, Header, pack, unpack

SHAPE = (64, 8, 8)
FAST = settings(max_examples=1500, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _codec(channels=(1, 5, 9, 20), bits=2, scales="calibrated") -> AECNNCodec:
    import torch

    rng = np.random.default_rng(0)
    codec = AECNNCodec(SHAPE, channels, bits, width=4, scales=scales)
    train = torch.from_numpy(np.maximum(rng.normal(size=(64, *SHAPE)), 0).astype(np.float32))
    codec.calibrate(train)
    codec.fit_symbols(train)
    return codec


CODEC = _codec()
SAMPLE = np.maximum(np.random.default_rng(1).normal(size=SHAPE), 0).astype(np.float32)
STREAM = CODEC.encode(SAMPLE)


def _with_crc(body: bytes) -> bytes:
    return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(2, "big")


headers = st.builds(
    lambda c, h, w, bits, ec, picks, scales: Header(
        "aecnn", (c, h, w), bits, ec, tuple(sorted(set(i % c for i in picks))),
        bytes(scales[: len(set(i % c for i in picks))]) if scales else b""),
    st.integers(1, 300), st.integers(1, 64), st.integers(1, 64), st.integers(1, 16), st.booleans(),
    st.lists(st.integers(0, 299), min_size=1, max_size=40),
    st.one_of(st.just(b""), st.binary(min_size=40, max_size=40)),
)


@FAST
@given(headers, st.binary(min_size=1, max_size=64))
def test_header_round_trip(header, payload):
    assume(len(payload) <= 4 * header.symbols_shape[0] * header.symbols_shape[1] * header.symbols_shape[2])
    parsed, body = unpack(pack(header, payload))
    assert parsed == header and body == payload


def test_codec_round_trip_is_exact():
    assert np.array_equal(CODEC.decode(STREAM), CODEC.dequantized(SAMPLE))


def test_header_is_small():
    header, payload = unpack(STREAM)
    # magic, version|codec, flags, 3 one-byte dims, count + 4 indices, CRC-16; calibrated scales stay home
    assert len(STREAM) - len(payload) == 3 + 3 + 5 + 2
    per_sample = _codec(scales="per-sample")
    stream = per_sample.encode(SAMPLE)
    header, payload = unpack(stream)
    assert len(header.scale_codes) == 4 and len(stream) - len(payload) == 3 + 3 + 5 + 4 + 2
    assert np.array_equal(per_sample.decode(stream), per_sample.dequantized(SAMPLE))


def test_stream_of_the_other_scale_mode_is_rejected():
    with pytest.raises(BitstreamError, match="does not match"):
        CODEC.decode(_codec(scales="per-sample").encode(SAMPLE))


@pytest.mark.parametrize("data", [b"", b"\xae", STREAM[:3], bytes(100), b"GIF89a" + bytes(20)])
def test_empty_short_and_foreign_inputs(data):
    with pytest.raises(BitstreamError):
        CODEC.decode(data)


def test_every_truncation_raises():
    for n in range(len(STREAM)):
        with pytest.raises(BitstreamError):
            CODEC.decode(STREAM[:n])


def test_every_single_bit_flip_raises():
    for i in range(8 * len(STREAM)):
        data = bytearray(STREAM)
        data[i // 8] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            CODEC.decode(bytes(data))


def test_oversized_shape_is_rejected_before_allocation():
    huge = bytes([MAGIC, (VERSION << 5) | 1, 0x10]) + b"\xff\xff\x7f" * 3  # C = H = W = 2^21 - 1
    with pytest.raises(BitstreamError, match="exceeds the limit"):
        unpack(_with_crc(huge + b"\0" * 8))
    big = bytes([MAGIC, (VERSION << 5) | 1, 0x10]) + b"\x80\x20" * 3  # 4096^3 elements
    with pytest.raises(BitstreamError, match="larger than"):
        unpack(_with_crc(big + b"\0" * 8))


def test_wrong_version_codec_and_mismatched_codec():
    body = bytearray(STREAM[:-2])
    body[1] = (2 << 5) | 1
    with pytest.raises(BitstreamError, match="version"):
        CODEC.decode(_with_crc(bytes(body)))
    body[1] = (VERSION << 5) | 30
    with pytest.raises(BitstreamError, match="codec id"):
        CODEC.decode(_with_crc(bytes(body)))
    other = _codec(channels=(0, 1, 2, 3))
    with pytest.raises(BitstreamError, match="does not match"):
        other.decode(STREAM)


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_raise(data):
    with pytest.raises(BitstreamError):
        CODEC.decode(data)


mutations = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete"]),
                               st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4)


@FAST
@given(mutations)
def test_mutated_streams_raise(edits):
    data = bytearray(STREAM)
    for op, pos, value in edits:
        i = pos % (len(data) + (op == "insert")) if data or op == "insert" else 0
        if op == "flip" and data:
            data[i] ^= (value or 1)
        elif op == "set" and data:
            data[i] = value
        elif op == "insert":
            data.insert(i, value)
        elif op == "delete" and data:
            del data[i]
    if bytes(data) == STREAM:
        return
    with pytest.raises(BitstreamError):
        CODEC.decode(bytes(data))


@FAST
@given(st.binary(min_size=0, max_size=120))
def test_valid_crc_over_random_body_raises(body):
    """Foreign bytes that even carry a correct CRC still never escape as another exception."""
    data = _with_crc(bytes([MAGIC, (VERSION << 5) | 1]) + body)
    with pytest.raises(BitstreamError):
        CODEC.decode(data)


def test_header_without_payload_is_rejected():
    """A bare header (CRC and all) used to decode to an all-zero tensor."""
    header, payload = unpack(STREAM)
    bare = _with_crc(STREAM[:len(STREAM) - 2 - len(payload)])
    with pytest.raises(BitstreamError, match="payload of 0 bytes"):
        CODEC.decode(bare)
    with pytest.raises(ValueError, match="payload"):
        pack(header, b"")


def test_certain_symbols_still_give_a_payload_byte():
    """A symbol model sure of every symbol leaves the coder empty; the payload is then one byte."""
    codec = _codec()
    zeros = np.zeros(SHAPE, dtype=np.float32)
    stream = codec.encode(zeros)
    _, payload = unpack(stream)
    assert len(payload) >= 1
    assert np.array_equal(codec.decode(stream), codec.dequantized(zeros))


def test_padded_varint_is_rejected():
    body = STREAM[:-2]
    padded = body[:3] + bytes([body[3] | 0x80, 0x00]) + body[4:]  # C = 64 written in two bytes
    with pytest.raises(BitstreamError, match="padded varint"):
        unpack(_with_crc(padded))


def _reencode_channels(mode: int, chan_bytes: bytes) -> bytes:
    """STREAM with its channel set (count + 4 indices) stored in another mode."""
    body = bytearray(STREAM[:-2])
    body[2] = (body[2] & ~0x60) | (mode << 5)
    return _with_crc(bytes(body[:6]) + chan_bytes + bytes(body[6 + 5:]))


def test_channel_set_in_a_mode_the_writer_would_not_use_is_rejected():
    mask = bytearray(8)
    for i in CODEC.channels:
        mask[i // 8] |= 1 << (i % 8)
    with pytest.raises(BitstreamError, match="where the writer uses mode 1"):
        unpack(_reencode_channels(2, bytes(mask)))
    with pytest.raises(BitstreamError, match="unknown channel-set mode 3"):
        unpack(_reencode_channels(3, b""))
    listed = bytes([64]) + bytes(range(64))
    header = Header("aecnn", SHAPE, 2, True, tuple(range(64)))
    body = bytearray(pack(header, b"\x01")[:-2])
    body[2] |= 1 << 5
    with pytest.raises(BitstreamError, match="where the writer uses mode 0"):
        unpack(_with_crc(bytes(body[:6]) + listed + bytes(body[6:])))


def test_oversized_input_is_rejected_before_it_is_copied():
    from grl_aecnn.codecs.bitstream import MAX_STREAM_BYTES

    with pytest.raises(BitstreamError, match="longer than any bitstream"):
        unpack(memoryview(bytearray(MAX_STREAM_BYTES + 1)))
    header, payload = unpack(STREAM)
    too_long = STREAM[:-2][:len(STREAM) - 2 - len(payload)] + bytes(4 * 4 * 8 * 8 + 1)
    with pytest.raises(BitstreamError, match="out of bounds"):
        unpack(_with_crc(too_long))
