"""Split tensors as shards: what is written is what is read, in memory or per batch, and codec
training gives the same codec on either; a reader on a node without the driver's folder reads
the same rows from the run's object store (moto's S3 server)."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.register_assert_rewrite("cluster_fixtures")
from cluster_fixtures import S3Store  # noqa: E402
from data_pipelines.shards import ShardError, ShardWriter, SplitArray, chunk_rows, publish, sample_rows  # noqa: E402

pytest_plugins = ["cluster_fixtures"]


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


# -- shards on an object store (moto's S3 server) --------------------------------------------

def _published(store: S3Store, bucket: str, folder: Path, data: np.ndarray) -> tuple[SplitArray, str]:
    uri = store.create_bucket(bucket) + "/runs/r/codecs/split_tensors/train"
    _write(folder, data, 5)
    publish(folder, uri)
    return SplitArray.open(folder, in_memory_bytes=0).with_uri(uri), uri


def test_a_reader_without_the_folder_fetches_the_shards_it_reads_from_the_store(
        s3_env: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from grl_aecnn import storage

    data = np.random.default_rng(1).normal(size=(23, 3, 4, 4)).astype(np.float32)
    array, uri = _published(s3_env, "shards-read", tmp_path / "driver" / "train", data)
    assert s3_env.keys("shards-read") == [f"runs/r/codecs/split_tensors/train/{n}"
                                            for n in ("00000.npy", "00001.npy", "00002.npy", "00003.npy",
                                                      "00004.npy", "index.json")]
    idx = torch.tensor([22, 0, 7, 5, 5, 14])  # shards 4, 0, 1, 1, 2: never shard 3
    assert np.array_equal(array[idx].numpy(), data[idx.numpy()])
    assert not (tmp_path / "scratch").exists()  # the node with the folder reads it in place
    sent = pickle.dumps(array)  # as Tune hands it to a trial

    shutil.rmtree(tmp_path / "driver")  # another node: no driver folder, a fresh scratch folder
    monkeypatch.setenv("GRL_AECNN_SCRATCH", str(tmp_path / "node-scratch"))
    reader = pickle.loads(sent)
    assert np.array_equal(reader[idx].numpy(), data[idx.numpy()])
    cache = storage.mirror_root(uri) / array.set_id
    assert cache.is_relative_to(tmp_path / "node-scratch")
    assert sorted(p.name for p in cache.iterdir()) == ["00000.npy", "00001.npy", "00002.npy", "00004.npy"]
    assert np.array_equal(torch.cat(list(reader.split(4))).numpy(), data)
    whole = SplitArray.open(uri)  # small: read whole, straight from the URI
    assert whole.data is not None and np.array_equal(whole[:].numpy(), data)

    # a new set written to the same place is told from the cached one
    _write(tmp_path / "driver" / "train", data + 1, 5)
    publish(tmp_path / "driver" / "train", uri)
    shutil.rmtree(tmp_path / "driver")
    newer = SplitArray.open(uri, in_memory_bytes=0)
    assert newer.set_id != array.set_id and np.array_equal(newer[idx].numpy(), data[idx.numpy()] + 1)
    assert not cache.exists()


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "other rows"])
def test_a_missing_or_corrupt_shard_on_the_store_is_one_line_naming_it(
        damage: str, s3_env: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from grl_aecnn.codecs.sweep import shard_error

    data = np.ones((23, 3, 4, 4), np.float32)
    bucket = f"shards-{damage.replace(' ', '-')}"
    array, uri = _published(s3_env, bucket, tmp_path / "driver" / "train", data)
    key = "runs/r/codecs/split_tensors/train/00001.npy"
    client = s3_env.client()
    if damage == "missing":
        client.delete_object(Bucket=bucket, Key=key)
    else:
        good = (tmp_path / "driver" / "train" / "00001.npy").read_bytes()
        body = {"garbage": b"not a shard", "truncated": good[:len(good) // 2],
                "other rows": (tmp_path / "driver" / "train" / "00004.npy").read_bytes()}[damage]
        client.put_object(Bucket=bucket, Key=key, Body=body)
    shutil.rmtree(tmp_path / "driver")
    monkeypatch.setenv("GRL_AECNN_SCRATCH", str(tmp_path / "node-scratch"))
    reader = pickle.loads(pickle.dumps(array))
    assert np.array_equal(reader[[0, 1]].numpy(), data[:2])  # shard 0 is fine
    with pytest.raises(ShardError) as caught:
        reader[[7]]
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and f"{uri}/00001.npy" in message, message
    assert ("missing" in message) == (damage == "missing")
    with pytest.raises(ShardError):  # a corrupt copy is not kept: the next read asks the store again
        reader[[7]]

    # a trial's error as Ray and Tune hand it back still comes out as that one line
    from ray.exceptions import RayTaskError

    wrapped = RayTaskError("_trial", "Traceback (most recent call last):\n  ...", caught.value).as_instanceof_cause()
    assert str(shard_error(wrapped)) == message
    assert shard_error(RuntimeError("other")) is None and shard_error(None) is None


def test_a_set_missing_from_the_store_is_named(s3_env: S3Store) -> None:
    uri = s3_env.create_bucket("shards-none") + "/runs/r/codecs/split_tensors/train"
    with pytest.raises(ShardError, match=f"^split tensors {uri}/index.json is missing from the store$"):
        SplitArray.open(uri)
