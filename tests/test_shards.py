"""Split tensors as shards: what is written is what is read, in memory or per batch, and codec
training gives the same codec on either."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_pipelines.shards import ShardWriter, SplitArray, chunk_rows, sample_rows


def _write(folder: Path, data: np.ndarray, rows_per_shard: int) -> SplitArray:
    writer = ShardWriter(folder)
    for start in range(0, len(data), rows_per_shard):
        writer.append(data[start:start + rows_per_shard])
    return writer.close()


def test_rows_read_back_in_the_order_asked_for_from_memory_and_from_shards(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(23, 3, 4, 4)).astype(np.float32)
    in_memory = _write(tmp_path / "z", data, 5)
    sharded = SplitArray.open(tmp_path / "z", in_memory_bytes=0)
    assert in_memory.data is not None and sharded.data is None
    idx = torch.tensor([22, 0, 7, 5, 5, 14])
    for z in (in_memory, sharded):
        assert z.shape == (23, 3, 4, 4) and len(z) == 23
        assert np.array_equal(z[idx].numpy(), data[idx.numpy()])
        assert np.array_equal(z[3:9].numpy(), data[3:9])
        assert np.array_equal(torch.cat(list(z.split(4))).numpy(), data)


def test_an_unfinished_writer_publishes_nothing(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path / "z")
    writer.append(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        writer.append(np.zeros((2, 4), np.float32))
    assert not (tmp_path / "z").exists()


def test_passes_and_samples_are_bounded_in_bytes(tmp_path: Path) -> None:
    z = _write(tmp_path / "z", np.ones((40, 64, 8, 8), np.float32), 8)
    row = 64 * 8 * 8 * 4
    assert chunk_rows(z, 512) == 512
    assert chunk_rows(SplitArray(None, [1], (64, 56, 56)), 512) * 64 * 56 * 56 * 4 <= 64 * 2**20
    assert len(sample_rows(z, 10 * row, seed=0)) == 10
    assert len(sample_rows(z, 100 * row, seed=0)) == 40


def test_codec_training_is_the_same_on_shards_as_on_a_tensor(tmp_path: Path) -> None:
    from grl_aecnn.backbone.models import build_model
    from grl_aecnn.backbone.split import split_resnet
    from grl_aecnn.codecs.settings import CodecsConfig
    from grl_aecnn.codecs.store import build_codec, point_specs
    from grl_aecnn.codecs.training import accuracy, train_codec

    torch.manual_seed(0)
    head, tail = split_resnet(build_model("resnet18", 10).eval(), "stem")
    with torch.no_grad():
        z = head(torch.randn(40, 3, 32, 32))
    y = torch.randint(0, 10, (40,))
    _write(tmp_path / "z", z.numpy(), 16)
    cfg = CodecsConfig(train=["aecnn"], aecnn={"kept_channels": [2], "bits": [4]}, batch_size=16,
                       schedule={"attention": 1, "feature": 1, "codec": 1, "joint": 0})
    spec = point_specs(cfg, np.arange(64.0), 64)[0]
    results = []
    for source in (z, SplitArray.open(tmp_path / "z", in_memory_bytes=0)):
        torch.manual_seed(2)
        codec = build_codec(spec, (64, 8, 8))
        train_codec(codec, tail, source, y, cfg, seed=1, log=lambda *_: None)
        results.append(([p.detach().clone() for p in codec.parameters()], accuracy(codec, tail, source, y)))
    assert all(torch.equal(a, b) for a, b in zip(results[0][0], results[1][0]))
    assert results[0][1] == results[1][1]
