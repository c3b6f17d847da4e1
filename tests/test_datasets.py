"""Datasets: loading, deterministic stratified splits, grey->RGB, resizing, clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import fashion_mnist_available
from data_pipelines.datasets import (
    DatasetNotFound,
    TensorImages,
    load_splits,
    split_indices,
    stratified_subset,
)
from data_pipelines.transforms import normalize
from grl_aecnn.config import DataConfig


def test_stratified_subset_exact_size_balanced_and_deterministic():
    labels = np.repeat(np.arange(3), [50, 30, 20])
    picked = stratified_subset(labels, 10, seed=1)
    assert len(picked) == 10 and len(set(picked)) == 10
    assert np.bincount(labels[picked]).tolist() == [5, 3, 2]
    assert np.array_equal(picked, stratified_subset(labels, 10, seed=1))
    assert not np.array_equal(picked, stratified_subset(labels, 10, seed=2))
    assert np.array_equal(stratified_subset(labels, 500, seed=1), np.arange(100))


def test_split_indices_disjoint_cover_and_carve_test():
    labels = np.repeat(np.arange(4), 25)
    cfg = DataConfig(dataset="digits", val_fraction=0.1, test_fraction=0.2, seed=3)
    train, val, test = split_indices(cfg, labels, None)
    assert (len(train), len(val), len(test)) == (72, 8, 20)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    assert np.bincount(labels[test]).tolist() == [5] * 4
    # With a given test set, val is carved from train and the test indices point into it.
    train, val, test = split_indices(cfg, labels, np.arange(40) % 4)
    assert (len(train), len(val), len(test)) == (90, 10, 40)


def test_digits_splits_shapes_and_determinism():
    cfg = DataConfig(dataset="digits", input_size=20, seed=0)
    splits = load_splits(cfg)
    assert splits.name == "digits" and splits.num_classes == 10 and splits.class_names[3] == "3"
    assert sum(splits.sizes().values()) == 1797
    image, label = splits.train[0]
    assert image.shape == (3, 20, 20) and image.dtype == torch.float32 and 0 <= label < 10
    raw = splits.test.raw_image(5)
    assert raw.shape == (20, 20, 3) and raw.dtype == np.uint8
    assert np.array_equal(raw[..., 0], raw[..., 2]), "grey must be repeated into 3 equal channels"
    # Evaluation splits are the raw image, normalised.
    assert torch.allclose(splits.test[5][0], normalize(torch.from_numpy(raw).permute(2, 0, 1)))
    again = load_splits(cfg)
    assert isinstance(again.test, TensorImages)
    assert torch.equal(again.test.images, splits.test.images)
    assert np.array_equal(again.train.labels, splits.train.labels)
    other = load_splits(cfg.model_copy(update={"seed": 1}))
    assert not torch.equal(other.test.images, splits.test.images)


def test_subsets_and_augmentation():
    cfg = DataConfig(dataset="digits", input_size=16, train_subset=100, val_subset=20, test_subset=30)
    splits = load_splits(cfg)
    assert splits.sizes() == {"train": 100, "val": 20, "test": 30}
    assert np.bincount(splits.train.labels).tolist() == [10] * 10
    assert splits.train.augment and not splits.test.augment
    torch.manual_seed(0)
    views = torch.stack([splits.train[0][0] for _ in range(8)])
    assert views.shape == (8, 3, 16, 16)
    assert len({v.numpy().tobytes() for v in views}) > 1  # random crops and flips: the draws differ
    splits.train.augment = False
    plain = torch.stack([splits.train[0][0] for _ in range(8)])
    assert all(torch.equal(plain[0], v) for v in plain)  # without augmentation every draw is the image


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reader_on_idx_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("t10k", 20)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    splits = load_splits(DataConfig(dataset="fashion-mnist", data_dir=str(tmp_path), input_size=32))
    assert splits.sizes() == {"train": 54, "val": 6, "test": 20}
    assert splits.class_names[0] == "T-shirt/top"
    assert splits.train[0][0].shape == (3, 32, 32)


@pytest.mark.skipif(not fashion_mnist_available(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_default_splits():
    splits = load_splits(DataConfig(dataset="fashion-mnist", input_size=32, train_subset=5000, test_subset=1000))
    assert splits.sizes() == {"train": 5000, "val": 6000, "test": 1000}
    assert np.bincount(splits.train.labels).tolist() == [500] * 10
    assert np.bincount(splits.test.labels).tolist() == [100] * 10
    assert splits.test.raw_image(0).shape == (32, 32, 3)


def test_imagefolder_rgb_and_grey_files(tmp_path: Path):
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(10):
            size = (30 + i, 20 + 2 * i)
            mode_shape = (size[1], size[0], 3) if i % 2 else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, mode_shape, dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    splits = load_splits(DataConfig(dataset="imagefolder", data_dir=str(tmp_path), input_size=24,
                                    val_fraction=0.1, test_fraction=0.2))
    assert splits.class_names == ["cat", "dog"] and splits.sizes() == {"train": 14, "val": 2, "test": 4}
    for i in range(len(splits.test)):
        assert splits.test.raw_image(i).shape == (24, 24, 3)
        assert splits.test[i][0].shape == (3, 24, 24)


@pytest.mark.parametrize("dataset, hint", [
    ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
    ("caltech101", "data.download=true"),
    ("imagefolder", "data.data_dir"),
])
def test_missing_dataset_says_how_to_get_it(tmp_path: Path, dataset: str, hint: str):
    with pytest.raises(DatasetNotFound, match=hint.replace(".", r"\.")):
        load_splits(DataConfig(dataset=dataset, data_dir=str(tmp_path / "nowhere")))
