"""The bitstream container of SPEC 3.2: a few header bytes, the payload, a CRC-16.

Layout (all integers unsigned; varints are LEB128, at most 3 bytes each)::

    0      magic 0xAE
    1      version (high 3 bits) | codec id (low 5 bits)
    2      flags: bits-1 (bits 0-3) | entropy coded (bit 4) | channel-set mode (bits 5-6) | scales (bit 7)
    3..    C, H, W as varints
    ..     channel set: mode 0 = all C channels (nothing stored), 1 = count + increasing indices
           (varints), 2 = bitmask of ceil(C/8) bytes
    ..     scales: one log-coded byte per kept channel (see quantize.py), when the flag is set
    ..     payload (entropy-coded or raw symbols)
    -2     CRC-16/CCITT of everything before it (big endian)

At 32 px the float32 stem tensor is 16 KiB, so a 256x stream is 64 bytes in all: every
header byte is paid for, which is why shapes are varints and scales one byte each.

Parsing checks every bound before anything is allocated or copied, and accepts only what
`pack` writes: the shortest varints, the channel-set mode `pack` would choose, no unused
flag values, a non-empty payload. So a tensor has exactly one stream (equal tensors, equal
bytes). tests/fixtures/bitstream_v1_*.bin pin the version-1 format.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

MAGIC = 0xAE
VERSION = 1
CODEC_IDS = {"aecnn": 1, "bottlenetpp": 2}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
MAX_DIM = 4096
MAX_ELEMENTS = 1 << 24
CRC_BYTES = 2
MAX_HEADER_BYTES = 3 + 3 * 3 + (MAX_DIM + 7) // 8 + MAX_DIM
MAX_SYMBOL_BYTES = 4  # an upper bound on the coded size of one symbol (raw: at most 16 bits)
MAX_STREAM_BYTES = MAX_HEADER_BYTES + MAX_SYMBOL_BYTES * MAX_ELEMENTS + CRC_BYTES
ALL, INDEX_LIST, BITMASK = 0, 1, 2


class BitstreamError(ValueError):
    """Bytes that are not a valid bitstream for this codec: truncated, altered, foreign or too large."""


@dataclass(frozen=True)
class Header:
    codec: str
    shape: tuple[int, int, int]
    bits: int
    entropy_coded: bool
    channels: tuple[int, ...]
    scale_codes: bytes = b""

    @property
    def symbols_shape(self) -> tuple[int, int, int]:
        """Shape of the coded symbol tensor: the kept channels at full resolution."""
        return (len(self.channels), self.shape[1], self.shape[2])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    """Cursor over the header bytes that turns every overrun into a BitstreamError."""

    def __init__(self, data: bytes, end: int):
        self.data, self.pos, self.end = data, 0, end

    def byte(self, what: str) -> int:
        if self.pos >= self.end:
            raise BitstreamError(f"truncated header: no byte left for {what}")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise BitstreamError(f"truncated header: {what} needs {n} bytes, {self.end - self.pos} left")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self, what: str, limit: int) -> int:
        value = 0
        for shift in (0, 7, 14):
            byte = self.byte(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if shift and not byte:
                    raise BitstreamError(f"{what}: padded varint (not the shortest encoding)")
                break
        else:
            raise BitstreamError(f"{what}: varint longer than 3 bytes")
        if value > limit:
            raise BitstreamError(f"{what} = {value} exceeds the limit {limit}")
        return value


def _channel_set(channels: tuple[int, ...], c: int) -> tuple[int, bytes]:
    """The cheapest of: nothing (all channels), an index list, a bitmask."""
    if channels == tuple(range(c)):
        return ALL, b""
    listed = _varint(len(channels)) + b"".join(_varint(i) for i in channels)
    mask = bytearray((c + 7) // 8)
    for i in channels:
        mask[i // 8] |= 1 << (i % 8)
    return (INDEX_LIST, listed) if len(listed) <= len(mask) else (BITMASK, bytes(mask))


def pack(header: Header, payload: bytes) -> bytes:
    """Header + payload + CRC; validates the header so a bad codec cannot write a bad stream."""
    c, h, w = header.shape
    if not all(1 <= d <= MAX_DIM for d in header.shape) or c * h * w > MAX_ELEMENTS:
        raise ValueError(f"shape {header.shape} out of bounds")
    if not 1 <= header.bits <= 16:
        raise ValueError(f"bits {header.bits} out of 1..16")
    chans = tuple(header.channels)
    if not chans or list(chans) != sorted(set(chans)) or chans[-1] >= c:
        raise ValueError(f"channel set {chans} must be non-empty, increasing and < {c}")
    if header.scale_codes and len(header.scale_codes) != len(chans):
        raise ValueError("one scale code per kept channel")
    if not 1 <= len(payload) <= MAX_SYMBOL_BYTES * len(chans) * h * w:
        raise ValueError(f"payload of {len(payload)} bytes is out of bounds for {len(chans)}x{h}x{w} symbols")
    mode, chan_bytes = _channel_set(chans, c)
    flags = (header.bits - 1) | (header.entropy_coded << 4) | (mode << 5) | (bool(header.scale_codes) << 7)
    body = (bytes([MAGIC, (VERSION << 5) | CODEC_IDS[header.codec], flags])
            + _varint(c) + _varint(h) + _varint(w) + chan_bytes + header.scale_codes + payload)
    return body + binascii.crc_hqx(body, 0xFFFF).to_bytes(CRC_BYTES, "big")


def unpack(data: bytes) -> tuple[Header, bytes]:
    """Parse and verify a stream; returns the header and the payload bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_STREAM_BYTES:
        raise BitstreamError(f"{len(data)} bytes is longer than any bitstream ({MAX_STREAM_BYTES})")
    data = bytes(data)
    if len(data) < 3 + 3 + CRC_BYTES:
        raise BitstreamError(f"too short for a bitstream ({len(data)} bytes)")
    if data[0] != MAGIC:
        raise BitstreamError(f"not a grl-aecnn bitstream (magic 0x{data[0]:02x}, expected 0x{MAGIC:02x})")
    end = len(data) - CRC_BYTES
    if binascii.crc_hqx(data[:end], 0xFFFF) != int.from_bytes(data[end:], "big"):
        raise BitstreamError("CRC mismatch: the bitstream is truncated or altered")
    version, codec_id = data[1] >> 5, data[1] & 0x1F
    if version != VERSION:
        raise BitstreamError(f"bitstream version {version} is not supported (expected {VERSION})")
    if codec_id not in CODEC_NAMES:
        raise BitstreamError(f"unknown codec id {codec_id}")
    flags = data[2]
    bits, entropy_coded, mode, has_scales = (flags & 0x0F) + 1, bool(flags & 0x10), (flags >> 5) & 3, flags >> 7
    if mode not in (ALL, INDEX_LIST, BITMASK):
        raise BitstreamError(f"unknown channel-set mode {mode}")
    reader = _Reader(data, end)
    reader.pos = 3
    c = reader.varint("channels", MAX_DIM)
    h = reader.varint("height", MAX_DIM)
    w = reader.varint("width", MAX_DIM)
    if min(c, h, w) == 0 or c * h * w > MAX_ELEMENTS:
        raise BitstreamError(f"tensor shape {(c, h, w)} is empty or larger than {MAX_ELEMENTS} elements")
    channels = _read_channels(reader, mode, c)
    canonical = _channel_set(channels, c)[0]
    if canonical != mode:
        raise BitstreamError(f"channel set stored in mode {mode} where the writer uses mode {canonical}")
    scales = reader.take(len(channels), "scales") if has_scales else b""
    size = end - reader.pos
    if not 1 <= size <= MAX_SYMBOL_BYTES * len(channels) * h * w:
        raise BitstreamError(f"payload of {size} bytes is out of bounds for {len(channels)}x{h}x{w} symbols")
    header = Header(CODEC_NAMES[codec_id], (c, h, w), bits, entropy_coded, channels, scales)
    return header, data[reader.pos:end]


def _read_channels(reader: _Reader, mode: int, c: int) -> tuple[int, ...]:
    if mode == ALL:
        return tuple(range(c))
    if mode == INDEX_LIST:
        k = reader.varint("kept-channel count", c)
        chans = tuple(reader.varint("channel index", c - 1) for _ in range(k))
        if k == 0 or any(b <= a for a, b in zip(chans, chans[1:])):
            raise BitstreamError("kept-channel indices must be non-empty and strictly increasing")
        return chans
    mask = reader.take((c + 7) // 8, "channel bitmask")
    chans = tuple(i for i in range(c) if mask[i // 8] >> (i % 8) & 1)
    if not chans or any(mask[i // 8] >> (i % 8) & 1 for i in range(c, 8 * len(mask))):
        raise BitstreamError("channel bitmask is empty or marks channels beyond C")
    return chans
