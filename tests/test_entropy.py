"""Static entropy coder: exact round trips, size close to the model's ideal code length,
smaller than zstd -19 on the same symbols, corrupt payloads rejected; the same for the
neighbour-context model, which must beat the per-cell one on correlated symbols."""

from __future__ import annotations

import numpy as np
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from grl_aecnn.codecs.bitstream import BitstreamError
from grl_aecnn.codecs.entropy import ContextModel, SymbolModel, SymbolTables, pack_raw, unpack_raw


def _skewed(rng: np.random.Generator, n: int, k: int, hw: int, alphabet: int) -> np.ndarray:
    probs = np.array([0.6, 0.25, 0.1, 0.05] + [0.0] * (alphabet - 4))
    probs = probs / probs.sum()
    return rng.choice(alphabet, size=(n, k, hw, hw), p=probs).astype(np.int32)


def test_round_trip_and_size_near_ideal():
    rng = np.random.default_rng(0)
    train = _skewed(rng, 200, 8, 16, 16)
    model = SymbolModel.fit(train, 16)
    sample = _skewed(rng, 1, 8, 16, 16)[0]
    payload = model.encode(sample)
    assert np.array_equal(model.decode(payload, sample.shape), sample)
    ideal = model.information_bits(sample) / 8
    assert len(payload) <= ideal * 1.02 + 4  # ANS: at most a few bytes of flush overhead


def test_smaller_than_zstd_on_same_symbols():
    rng = np.random.default_rng(1)
    model = SymbolModel.fit(_skewed(rng, 100, 4, 8, 4), 4)
    sample = _skewed(rng, 1, 4, 8, 4)[0]
    zstd = len(zstandard.ZstdCompressor(level=19).compress(sample.astype(np.uint8).tobytes()))
    assert len(model.encode(sample)) < zstd


def test_unseen_symbols_stay_codable():
    model = SymbolModel.fit(np.zeros((10, 2, 4, 4), dtype=np.int32), 4)
    sample = np.full((2, 4, 4), 3, dtype=np.int32)
    assert np.array_equal(model.decode(model.encode(sample), sample.shape), sample)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(1, 8), st.integers(1, 12), st.integers(0, 2**32 - 1))
def test_random_round_trips(bits, side, seed):
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, 1 << bits, size=(3, side, side)).astype(np.int32)
    model = SymbolModel.fit(symbols[None], 1 << bits)
    assert np.array_equal(model.decode(model.encode(symbols), symbols.shape), symbols)
    assert np.array_equal(unpack_raw(pack_raw(symbols, bits), symbols.shape, bits), symbols)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.binary(max_size=64))
def test_garbage_payload_raises_unless_canonical(payload):
    """Only bytes the encoder itself would emit are accepted: anything else raises."""
    model = SymbolModel.fit(_skewed(np.random.default_rng(2), 20, 2, 8, 4), 4)
    try:
        symbols = model.decode(payload, (2, 8, 8))
    except BitstreamError:
        return
    assert model.encode(symbols) == payload


def test_spatial_context_pays_off_on_position_dependent_symbols():
    """Background at the border, busy centre (a centred dataset): a per-cell model codes it smaller."""
    rng = np.random.default_rng(3)

    def draw(n: int) -> np.ndarray:
        syms = np.zeros((n, 2, 8, 8), dtype=np.int32)
        syms[:, :, 2:6, 2:6] = rng.integers(0, 4, size=(n, 2, 4, 4))
        return syms

    train, test = draw(300), draw(20)
    flat, cells = SymbolModel.fit(train, 4, grid=1), SymbolModel.fit(train, 4, grid=8)
    assert cells.probs.shape == (2, 8, 8, 4) and flat.probs.shape == (2, 1, 1, 4)
    for model in (flat, cells):
        assert all(np.array_equal(model.decode(model.encode(s), s.shape), s) for s in test)
    sizes = {g: np.mean([len(m.encode(s)) for s in test]) for g, m in ((1, flat), (8, cells))}
    assert sizes[8] < 0.8 * sizes[1]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 6), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_grid_models_round_trip_any_plane(grid, h, w, seed):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 4, size=(5, 2, h, w)).astype(np.int32)
    model = SymbolModel.fit(train, 4, grid=grid)
    assert model.probs.shape[1:3] == (min(grid, h), min(grid, w))
    assert np.array_equal(model.decode(model.encode(train[0]), train[0].shape), train[0])


def _correlated(rng: np.random.Generator, n: int) -> np.ndarray:
    """2-bit symbols whose channels and neighbours repeat each other (smooth activations)."""
    base = rng.integers(0, 4, size=(n, 1, 4, 4)).repeat(2, axis=2).repeat(2, axis=3)
    noise = rng.random((n, 3, 8, 8)) < 0.1
    return np.where(noise, rng.integers(0, 4, size=(n, 3, 8, 8)), base).astype(np.int32)


def test_context_model_codes_correlated_symbols_in_fewer_bytes():
    rng = np.random.default_rng(4)
    train, test = _correlated(rng, 400), _correlated(rng, 20)
    cells, ctx = SymbolModel.fit(train, 4, grid=8), ContextModel.fit(train, 4, grid=8)
    assert ctx.probs.shape == (3, 8, 8, 64, 4)
    assert all(np.array_equal(ctx.decode(ctx.encode(s), s.shape), s) for s in test)
    sizes = {m: np.mean([len(m.encode(s)) for s in test]) for m in (cells, ctx)}
    assert sizes[ctx] < 0.6 * sizes[cells]
    ideal = ctx.information_bits(test) / 8 / len(test)
    assert sizes[ctx] <= ideal * 1.02 + 4


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 8), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
def test_context_models_round_trip_any_alphabet_and_plane(bits, k, h, w, seed):
    """Wavefront decoding reproduces every symbol whatever the plane and alphabet (2 to 256)."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 1 << bits, size=(4, k, h, w)).astype(np.int32)
    model = ContextModel.fit(train, 1 << bits, grid=3)
    assert np.array_equal(model.decode(model.encode(train[0]), train[0].shape), train[0])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.binary(max_size=48))
def test_context_model_accepts_only_its_own_bytes(payload):
    model = ContextModel.fit(_correlated(np.random.default_rng(5), 50), 4, grid=8)
    try:
        symbols = model.decode(payload, (3, 8, 8))
    except BitstreamError:
        return
    assert model.encode(symbols) == payload


def test_codec_tables_pick_the_context_model_for_small_alphabets_only():
    assert SymbolTables(2, (8, 8), 4, 8, context=True).probs.shape == (2, 8, 8, 64, 4)
    assert SymbolTables(2, (8, 8), 256, 8, context=True).probs.shape == (2, 8, 8, 256)  # 8-bit: per cell
